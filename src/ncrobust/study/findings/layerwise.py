"""Findings read from the layerwise measurement at the end of training (App. G, Figs. 11-12)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ncrobust.study.aggregate import RunGroup
from ncrobust.study.findings.claims import CLAIMS, partner, ratio, runs_text
from ncrobust.study.findings.thresholds import Thresholds
from ncrobust.study.findings.verdicts import Check, Finding
from ncrobust.study.study import Study
from ncrobust.views import ADAPTIVE_VIEW, OUTPUT_LAYER

NO_LAYERWISE = "no layerwise measurement (train with --final-layers all or measure --layers all)"


def _claim(key: str) -> str:
    return CLAIMS[key].statement


def _profile(
    study: Study, label: str, split: str, view: str, metric: str
) -> tuple[int | None, pd.DataFrame]:
    """(layerwise epoch, :meth:`Study.layer_curve` of the metric there); empty if absent."""
    epoch = study.layerwise_epoch(label)
    if epoch is None:
        return None, pd.DataFrame(columns=["depth", "layer", "mean", "std"])
    return epoch, study.layer_curve(label, epoch, split, view, metric)


def _layers(count: int, t: Thresholds) -> Check:
    return Check("measured layers", float(count), ">=", t.min_layers, "min_layers")


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(pd.Series(x).corr(pd.Series(y), method="spearman"))


def _log_slope(profile: pd.DataFrame) -> float:
    """Slope of log10 NC1 against depth scaled to [0, 1] (comparable across depths)."""
    values = profile["mean"].to_numpy(dtype=float)
    if len(values) < 2 or (values <= 0).any():
        return math.nan
    depth = profile["depth"].to_numpy(dtype=float)
    depth = (depth - depth.min()) / (depth.max() - depth.min())
    return float(np.polyfit(depth, np.log10(values), 1)[0])


def finding5(study: Study, t: Thresholds) -> list[Finding]:
    """Clean NC1 falls with depth (5a, per group); more slowly for AT than ST (5b, per pair)."""
    out = []
    profiles: dict[str, pd.DataFrame] = {}
    for g in study.groups_of(("st", "at")):
        epoch, profile = _profile(study, g.label, "train", "clean", "nc1")
        if epoch is None or len(profile) < 2:
            out.append(Finding("5a", _claim("5a"), runs_text(g), missing=NO_LAYERWISE))
            continue
        profiles[g.label] = profile
        rho = _spearman(profile["depth"].to_numpy(float), profile["mean"].to_numpy(float))
        out.append(
            Finding(
                "5a",
                _claim("5a"),
                runs_text(g),
                epoch,
                checks=(
                    Check(
                        "Spearman(depth, NC1 clean)", rho, "<=", -t.layer_spearman, "layer_spearman"
                    ),
                ),
                context=(
                    ("NC1 clean first layer", float(profile["mean"].iloc[0])),
                    ("NC1 clean last layer", float(profile["mean"].iloc[-1])),
                ),
                preconditions=(_layers(len(profile), t),),
            )
        )
    if not out:
        out.append(Finding("5a", _claim("5a"), "—", missing="no ST or AT run"))
    at = [g for g in study.groups_of(("at",)) if g.label in profiles]
    st = [g for g in study.groups_of(("st",)) if g.label in profiles]
    pairs = [(s, p) for s in st if (p := partner(s, at, ("dataset", "model"))) is not None]
    if not pairs:
        out.append(
            Finding(
                "5b",
                _claim("5b"),
                "—",
                missing="needs layerwise measurements of an ST and an AT run of "
                "the same dataset and model",
            )
        )
    for s, a in pairs:
        slope_s, slope_a = _log_slope(profiles[s.label]), _log_slope(profiles[a.label])
        out.append(
            Finding(
                "5b",
                _claim("5b"),
                runs_text(s, a),
                study.layerwise_epoch(a.label),
                checks=(
                    Check(
                        "log10-NC1 slope AT / ST",
                        slope_a / slope_s if slope_s < 0 else math.nan,
                        "<=",
                        t.layer_slope_ratio,
                        "layer_slope_ratio",
                    ),
                ),
                context=(("log10-NC1 slope ST", slope_s), ("log10-NC1 slope AT", slope_a)),
                preconditions=(
                    _layers(min(len(profiles[s.label]), len(profiles[a.label])), t),
                    Check("fall of log10 NC1 over depth, ST", -slope_s, ">", 0.0, "5a for ST"),
                ),
            )
        )
    return out


def finding6(study: Study, t: Thresholds) -> list[Finding]:
    """ST: an early layer's NCC accuracy on pgd data beats the network's by a margin of the
    paper's scale (6), and the effect fades at the last feature layer (6b); per split."""
    groups = study.groups_of(("st",))
    if not groups:
        return [Finding(k, _claim(k), "—", missing="no ST run") for k in ("6", "6b", "6d")]
    out = []
    for g in groups:
        measured_any = False
        for split in ("train", "test"):
            epoch, profile = _profile(study, g.label, split, "pgd", "ncc_accuracy")
            order = study.layer_order(g.label)
            early = profile[profile["layer"].isin(order[:-1])]
            if epoch is None or early.empty:
                continue
            measured_any = True
            out += _ncc_findings(study, g, split, epoch, profile, early, t)
        if not measured_any:
            why = "no layerwise NCC accuracy on pgd data (train with --final-layers all and pgd)"
            out += [Finding(k, _claim(k), runs_text(g), missing=why) for k in ("6", "6b", "6d")]
    return out


def _ncc_findings(
    study: Study,
    g: RunGroup,
    split: str,
    epoch: int,
    profile: pd.DataFrame,
    early: pd.DataFrame,
    t: Thresholds,
) -> list[Finding]:
    best = early.iloc[int(np.argmax(early["mean"].to_numpy(dtype=float)))]
    last = profile.iloc[-1]
    robust = study.value(g.label, split, "pgd", OUTPUT_LAYER, "accuracy", epoch)
    layers = (_layers(len(profile), t),)
    network = ("network accuracy on pgd", robust)
    return [
        Finding(
            "6",
            f"{_claim('6')} ({split} data)",
            runs_text(g),
            epoch,
            checks=(
                Check(
                    "best early NCC accuracy - network accuracy on pgd",
                    float(best["mean"]) - robust,
                    ">=",
                    t.ncc_robust_margin,
                    "ncc_robust_margin",
                ),
            ),
            context=((f"NCC accuracy on pgd at {best['layer']}", float(best["mean"])), network),
            preconditions=layers,
        ),
        Finding(
            "6b",
            f"{_claim('6b')} ({split} data)",
            runs_text(g),
            epoch,
            checks=(
                Check(
                    "last-layer NCC accuracy - network accuracy on pgd",
                    float(last["mean"]) - robust,
                    "<=",
                    t.ncc_fade_margin,
                    "ncc_fade_margin",
                ),
            ),
            context=((f"NCC accuracy on pgd at {last['layer']}", float(last["mean"])), network),
            preconditions=layers,
        ),
        _adaptive(study, g, split, early, t),
    ]


def _adaptive(study: Study, g: RunGroup, split: str, early: pd.DataFrame, t: Thresholds) -> Finding:
    """6d: the NCC classifier's accuracy under PGD on the NCC rule itself (view
    ``ncc_adaptive``) at every early layer, beside the transfer number of finding 6."""
    rows = study.rows(g.label)
    rows = rows[
        (rows["view"] == ADAPTIVE_VIEW)
        & (rows["split"] == split)
        & (rows["metric"] == "ncc_accuracy")
        & rows["layer"].isin(early["layer"])
    ]
    epoch = int(rows["epoch"].max()) if len(rows) else None
    adaptive = (
        study.layer_curve(g.label, epoch, split, ADAPTIVE_VIEW, "ncc_accuracy")
        if epoch is not None
        else early.iloc[0:0]
    )
    adaptive = adaptive[adaptive["layer"].isin(early["layer"])]
    robust = (
        math.nan
        if epoch is None
        else study.value(g.label, split, "pgd", OUTPUT_LAYER, "accuracy", epoch)
    )
    transfer = dict(zip(early["layer"], early["mean"].astype(float), strict=True))
    context: list[tuple[str, float]] = [("network accuracy on pgd", robust)]
    best = math.nan
    if len(adaptive):
        top = adaptive.iloc[int(np.argmax(adaptive["mean"].to_numpy(dtype=float)))]
        best = float(top["mean"])
        for layer, value in zip(adaptive["layer"], adaptive["mean"].astype(float), strict=True):
            context += [
                (f"NCC accuracy at {layer}, transfer pgd", transfer.get(layer, math.nan)),
                (f"NCC accuracy at {layer}, adaptive", value),
            ]
    return Finding(
        "6d",
        f"{_claim('6d')} ({split} data)",
        runs_text(g),
        epoch,
        checks=(
            Check(
                "best early NCC accuracy under the adaptive attack - network accuracy on pgd",
                best - robust,
                ">=",
                t.ncc_robust_margin,
                "ncc_robust_margin",
            ),
        ),
        context=tuple(context),
        preconditions=(
            Check(
                f"early layers attacked through the NCC rule (view {ADAPTIVE_VIEW})",
                float(len(adaptive)),
                ">=",
                1.0,
                "an adaptive measurement",
            ),
        ),
        notes=(
            "holds: the robustness survives an attack on the NCC classifier itself; does not "
            "hold: it was an artefact of attacking the network (a transfer attack)",
        ),
    )


def finding6c(study: Study, t: Thresholds) -> list[Finding]:
    """ST's best early-layer NCC accuracy on pgd beats the best layer's of AT (per split)."""
    at = study.groups_of(("at",))
    st = study.groups_of(("st",))
    pairs = [(s, p) for s in st if (p := partner(s, at, ("dataset", "model"))) is not None]
    if not pairs:
        return [
            Finding(
                "6c",
                _claim("6c"),
                "—",
                missing="needs an ST and an AT run of the same dataset and model",
            )
        ]
    out = []
    for s, a in pairs:
        for split in ("train", "test"):
            epoch_s, profile_s = _profile(study, s.label, split, "pgd", "ncc_accuracy")
            _, profile_a = _profile(study, a.label, split, "pgd", "ncc_accuracy")
            early = profile_s[profile_s["layer"].isin(study.layer_order(s.label)[:-1])]
            if early.empty or profile_a.empty:
                continue
            best_s = float(early["mean"].max())
            best_a = float(profile_a["mean"].max())
            out.append(
                Finding(
                    "6c",
                    f"{_claim('6c')} ({split} data)",
                    runs_text(s, a),
                    epoch_s,
                    checks=(
                        Check(
                            "best early NCC accuracy on pgd, ST - best layer's, AT",
                            best_s - best_a,
                            ">=",
                            t.st_over_at_ncc,
                            "st_over_at_ncc",
                        ),
                    ),
                    context=(
                        ("best early NCC accuracy on pgd, ST", best_s),
                        ("best NCC accuracy on pgd, AT", best_a),
                    ),
                    preconditions=(_layers(min(len(profile_s), len(profile_a)), t),),
                    notes=(
                        "each network attacked by its own pgd: the paper notes the two numbers "
                        "are not directly comparable",
                    ),
                )
            )
    if not out:
        why = "no layerwise NCC accuracy on pgd data of both the ST and the AT run"
        out.append(Finding("6c", _claim("6c"), runs_text(*pairs[0]), missing=why))
    return out


def finding8(study: Study, t: Thresholds) -> list[Finding]:
    """ST: NC1 of pgd data close to clean NC1 at the first layer, far above it at the last."""
    groups = study.groups_of(("st",))
    if not groups:
        return [Finding("8", _claim("8"), "—", missing="no ST run")]
    out = []
    for g in groups:
        epoch, clean = _profile(study, g.label, "train", "clean", "nc1")
        _, pgd = _profile(study, g.label, "train", "pgd", "nc1")
        both = clean.merge(pgd, on=["depth", "layer"], suffixes=("_clean", "_pgd"))
        if epoch is None or len(both) < 2:
            why = "no layerwise NC1 of clean and pgd training data (train with --final-layers all)"
            out.append(Finding("8", _claim("8"), runs_text(g), missing=why))
            continue
        ratios = both["mean_pgd"].to_numpy(float) / both["mean_clean"].to_numpy(float)
        first, last = float(ratios[0]), float(ratios[-1])
        out.append(
            Finding(
                "8",
                _claim("8"),
                runs_text(g),
                epoch,
                checks=(
                    Check(
                        f"NC1 pgd / clean at {both['layer'].iloc[0]}",
                        first,
                        "<=",
                        t.early_nc1_ratio,
                        "early_nc1_ratio",
                    ),
                    Check(
                        "(NC1 pgd / clean) last layer / first layer",
                        ratio(last, first),
                        ">=",
                        t.layer_divergence,
                        "layer_divergence",
                    ),
                ),
                context=((f"NC1 pgd / clean at {both['layer'].iloc[-1]}", last),),
                preconditions=(_layers(len(both), t),),
            )
        )
    return out
