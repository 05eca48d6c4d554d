"""The paper's findings as checks on measured numbers, with thresholds that are visible settings.

Each finding is evaluated per run group (or per matched pair of groups) from the seed means of
a :class:`~ncrobust.analysis.study.Study`: a list of :class:`Check` (value, comparison,
threshold) whose outcome gives the verdict. Nothing is decided by hand; a finding whose data
was not measured says which data, and why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from enum import Enum

import numpy as np
import pandas as pd

from ncrobust.analysis.aggregate import RunGroup
from ncrobust.analysis.study import PENULTIMATE, Study, simplex_angle
from ncrobust.runs import OUTPUT_LAYER


def _threshold(default: float, help_text: str) -> float:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Thresholds:
    """The numbers each verdict is compared with (every one settable by a report flag)."""

    st_pgd_nc1_ratio: float = _threshold(
        10.0, "finding 1: ST perturbed (pgd) NC1 / clean NC1 must be at least this"
    )
    st_gaussian_nc1_ratio: float = _threshold(
        3.0, "finding 1: ST Gaussian NC1 / clean NC1 must be at most this"
    )
    targeted_angle: float = _threshold(
        0.5, "finding 2: angular distance (rad) of targeted class means to clean ones, at most"
    )
    targeted_accuracy: float = _threshold(
        0.5, "finding 2: rate of targeted examples predicted as their target, at least"
    )
    at_nc1: float = _threshold(1.0, "finding 3: AT clean and perturbed NC1, at most")
    at_nc1_peak_ratio: float = _threshold(
        0.5, "finding 3: AT final NC1 / peak NC1 over epochs, at most (decreasing from its peak)"
    )
    at_simplex_similarity: float = _threshold(
        0.2, "finding 3: AT simplex similarity (rad) of perturbed and clean means, at most"
    )
    at_ncc_gap: float = _threshold(
        0.05, "finding 3: |NCC accuracy - network accuracy| on AT perturbed data, at most"
    )
    trades_nc1_ratio: float = _threshold(
        2.0, "finding 4: TRADES clean NC1 / AT clean NC1, at least"
    )
    layer_spearman: float = _threshold(
        0.5, "finding 5: Spearman correlation of clean NC1 with depth, at most minus this"
    )
    layer_slope_margin: float = _threshold(
        0.0, "finding 5: AT minus ST slope of log10 NC1 per unit depth, more than this"
    )
    ncc_robust_margin: float = _threshold(
        0.05, "finding 6: best early-layer NCC accuracy minus network accuracy on pgd, at least"
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"threshold {f.name} must be a finite number, got {value!r}")

    @staticmethod
    def describe() -> dict[str, str]:
        """Field name -> what the threshold means."""
        return {f.name: str(f.metadata.get("help", "")) for f in fields(Thresholds)}


class Verdict(str, Enum):
    HOLDS = "holds"
    FAILS = "does not hold"
    NOT_MEASURED = "not measured"


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
}


@dataclass(frozen=True)
class Check:
    """One comparison ``value <op> threshold`` behind a verdict."""

    quantity: str
    value: float
    op: str
    threshold: float
    threshold_name: str

    @property
    def measured(self) -> bool:
        return math.isfinite(self.value)

    @property
    def passed(self) -> bool:
        return self.measured and _COMPARE[self.op](self.value, self.threshold)

    def describe(self) -> str:
        return f"{self.quantity} {self.op} {self.threshold:g} ({self.threshold_name})"


@dataclass(frozen=True)
class Finding:
    """The outcome of one paper finding on one run group (or pair of groups)."""

    key: str
    claim: str
    runs: str
    epoch: int | None = None
    checks: tuple[Check, ...] = ()
    context: tuple[tuple[str, float], ...] = ()  # further measured numbers shown with it
    missing: str = ""  # why it was not measured

    @property
    def verdict(self) -> Verdict:
        if self.missing or not self.checks:
            return Verdict.NOT_MEASURED
        unmeasured = [c.quantity for c in self.checks if not c.measured]
        if unmeasured:
            return Verdict.NOT_MEASURED
        return Verdict.HOLDS if all(c.passed for c in self.checks) else Verdict.FAILS

    @property
    def reason(self) -> str:
        """Why the finding was not measured ('' when it was)."""
        if self.missing:
            return self.missing
        unmeasured = [c.quantity for c in self.checks if not c.measured]
        return f"not measured: {', '.join(unmeasured)}" if unmeasured else ""

    def measured(self) -> list[tuple[str, float]]:
        """Every number behind the verdict: context, then each check's value."""
        return [*self.context, *((c.quantity, c.value) for c in self.checks)]


CLAIMS = {
    "1": "ST: adversarial (pgd) perturbations destroy NC1 while Gaussian noise barely changes it",
    "2": "ST targeted attack: perturbed class means land near the target class's clean mean",
    "3": "AT: clean and perturbed data both collapse onto the same simplex; NCC is as robust "
    "as the network",
    "4": "TRADES: much weaker collapse than AT",
    "5a": "Layerwise: clean NC1 decreases with depth",
    "5b": "Layerwise: NC1 decreases more slowly with depth for AT than for ST",
    "6": "ST: an early layer's NCC classifier is more robust than the network",
}


def _runs(*groups: RunGroup) -> str:
    return " vs ".join(
        f"{g.label} ({len(g.runs)} seed{'s' if len(g.runs) != 1 else ''})" for g in groups
    )


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else math.nan


# -- finding 1 ----------------------------------------------------------------------------


def finding1(study: Study, t: Thresholds) -> list[Finding]:
    """ST: pgd NC1 ≫ clean NC1, Gaussian NC1 ≈ clean NC1 (train data, last epoch)."""
    groups = study.groups_of(("st",))
    if not groups:
        return [Finding("1", CLAIMS["1"], "—", missing="no ST run")]
    out = []
    for g in groups:
        epoch = study.final_epoch(g.label, "train", "clean", PENULTIMATE, "nc1")
        if epoch is None:
            out.append(Finding("1", CLAIMS["1"], _runs(g), missing="clean NC1 not measured"))
            continue
        nc1 = {
            v: study.value(g.label, "train", v, PENULTIMATE, "nc1", epoch)
            for v in ("clean", "pgd", "gaussian")
        }
        absent = [v for v in ("pgd", "gaussian") if not math.isfinite(nc1[v])]
        missing = f"view(s) {', '.join(absent)} not measured at epoch {epoch}" if absent else ""
        out.append(
            Finding(
                "1",
                CLAIMS["1"],
                _runs(g),
                epoch,
                checks=(
                    Check(
                        "NC1 pgd / clean",
                        _ratio(nc1["pgd"], nc1["clean"]),
                        ">=",
                        t.st_pgd_nc1_ratio,
                        "st_pgd_nc1_ratio",
                    ),
                    Check(
                        "NC1 gaussian / clean",
                        _ratio(nc1["gaussian"], nc1["clean"]),
                        "<=",
                        t.st_gaussian_nc1_ratio,
                        "st_gaussian_nc1_ratio",
                    ),
                ),
                context=tuple((f"NC1 {v}", nc1[v]) for v in nc1),
                missing=missing,
            )
        )
    return out


# -- finding 2 ----------------------------------------------------------------------------


def finding2(study: Study, t: Thresholds) -> list[Finding]:
    """ST targeted: small angle between targeted (by target) and clean class means."""
    groups = study.groups_of(("st",))
    if not groups:
        return [Finding("2", CLAIMS["2"], "—", missing="no ST run")]
    out = []
    for g in groups:
        epoch = study.final_epoch(g.label, "train", "targeted", PENULTIMATE, "angular_distance")
        if epoch is None:
            out.append(
                Finding(
                    "2",
                    CLAIMS["2"],
                    _runs(g),
                    missing="targeted view not measured (--views ...,targeted)",
                )
            )
            continue
        classes = study.num_classes(g.label)
        context = [
            (
                "simplex similarity targeted",
                study.value(g.label, "train", "targeted", PENULTIMATE, "simplex_similarity", epoch),
            )
        ]
        if classes and classes > 1:
            context.append(("simplex angle arccos(-1/(C-1))", simplex_angle(classes)))
        out.append(
            Finding(
                "2",
                CLAIMS["2"],
                _runs(g),
                epoch,
                checks=(
                    Check(
                        "angular distance targeted vs clean (rad)",
                        study.value(
                            g.label, "train", "targeted", PENULTIMATE, "angular_distance", epoch
                        ),
                        "<=",
                        t.targeted_angle,
                        "targeted_angle",
                    ),
                    Check(
                        "target accuracy",
                        study.value(
                            g.label, "train", "targeted", OUTPUT_LAYER, "target_accuracy", epoch
                        ),
                        ">=",
                        t.targeted_accuracy,
                        "targeted_accuracy",
                    ),
                ),
                context=tuple(context),
            )
        )
    return out


# -- finding 3 ----------------------------------------------------------------------------


def finding3(study: Study, t: Thresholds) -> list[Finding]:
    """AT: clean and perturbed NC1 small and falling, same simplex, NCC as robust as the net."""
    groups = study.groups_of(("at",))
    if not groups:
        return [Finding("3", CLAIMS["3"], "—", missing="no AT run")]
    out = []
    for g in groups:
        view = study.perturbed_view(g.label, "train")
        epoch = study.final_epoch(g.label, "train", "clean", PENULTIMATE, "nc1")
        if view is None or epoch is None:
            what = "clean NC1" if epoch is None else "a perturbed view (train_adv or pgd)"
            out.append(
                Finding("3", CLAIMS["3"], _runs(g), missing=f"{what} not measured on training data")
            )
            continue
        checks = []
        for v in ("clean", view):
            curve = study.series(g.label, "train", v, PENULTIMATE, "nc1")
            final = study.value(g.label, "train", v, PENULTIMATE, "nc1", epoch)
            peak = float(curve["mean"].max()) if len(curve) else math.nan
            checks.append(Check(f"NC1 {v}", final, "<=", t.at_nc1, "at_nc1"))
            checks.append(
                Check(
                    f"NC1 {v} final / peak",
                    _ratio(final, peak),
                    "<=",
                    t.at_nc1_peak_ratio,
                    "at_nc1_peak_ratio",
                )
            )
        ncc = study.value(g.label, "train", view, PENULTIMATE, "ncc_accuracy", epoch)
        acc = study.value(g.label, "train", view, OUTPUT_LAYER, "accuracy", epoch)
        checks.append(
            Check(
                f"simplex similarity {view} vs clean (rad)",
                study.value(g.label, "train", view, PENULTIMATE, "simplex_similarity", epoch),
                "<=",
                t.at_simplex_similarity,
                "at_simplex_similarity",
            )
        )
        checks.append(
            Check(
                f"|NCC accuracy - accuracy| on {view}",
                abs(ncc - acc),
                "<=",
                t.at_ncc_gap,
                "at_ncc_gap",
            )
        )
        out.append(
            Finding(
                "3",
                CLAIMS["3"],
                _runs(g),
                epoch,
                checks=tuple(checks),
                context=((f"NCC accuracy {view}", ncc), (f"accuracy {view}", acc)),
            )
        )
    return out


# -- pairing groups -----------------------------------------------------------------------

PAIR_FIELDS = ("dataset", "model", "norm", "eps")


def _partner(
    group: RunGroup, candidates: Sequence[RunGroup], keys: Sequence[str] = PAIR_FIELDS
) -> RunGroup | None:
    """The candidate sharing ``keys`` with ``group`` and the fewest other differing settings."""
    mine = group.config.to_dict()
    same = [c for c in candidates if all(c.config.to_dict()[k] == mine[k] for k in keys)]
    if not same:
        return None

    def distance(c: RunGroup) -> int:
        theirs = c.config.to_dict()
        return sum(theirs[k] != mine[k] for k in mine if k not in ("seed", "out", "mode"))

    return min(same, key=distance)


# -- finding 4 ----------------------------------------------------------------------------


def finding4(study: Study, t: Thresholds) -> list[Finding]:
    """TRADES vs AT (same dataset, model, norm, eps): TRADES clean NC1 much larger."""
    trades = study.groups_of(("trades",))
    at = study.groups_of(("at",))
    if not trades or not at:
        return [Finding("4", CLAIMS["4"], "—", missing="needs both a TRADES and an AT run")]
    out = []
    for g in trades:
        partner = _partner(g, at)
        if partner is None:
            out.append(
                Finding(
                    "4",
                    CLAIMS["4"],
                    _runs(g),
                    missing="no AT run with the same dataset, model, norm and eps",
                )
            )
            continue
        nc1_t = study.value(g.label, "train", "clean", PENULTIMATE, "nc1")
        nc1_a = study.value(partner.label, "train", "clean", PENULTIMATE, "nc1")
        out.append(
            Finding(
                "4",
                CLAIMS["4"],
                _runs(g, partner),
                study.last_epoch(g.label),
                checks=(
                    Check(
                        "NC1 clean TRADES / AT",
                        _ratio(nc1_t, nc1_a),
                        ">=",
                        t.trades_nc1_ratio,
                        "trades_nc1_ratio",
                    ),
                ),
                context=(("NC1 clean TRADES", nc1_t), ("NC1 clean AT", nc1_a)),
            )
        )
    return out


# -- finding 5 ----------------------------------------------------------------------------


def _layer_profile(
    study: Study, label: str, split: str, view: str, metric: str
) -> tuple[int | None, pd.DataFrame]:
    """(layerwise epoch, :meth:`Study.layer_curve` of the metric there); empty if absent."""
    epoch = study.layerwise_epoch(label)
    if epoch is None:
        return None, pd.DataFrame(columns=["depth", "layer", "mean", "std"])
    return epoch, study.layer_curve(label, epoch, split, view, metric)


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
        epoch, profile = _layer_profile(study, g.label, "train", "clean", "nc1")
        if len(profile) < 3:
            out.append(
                Finding(
                    "5a",
                    CLAIMS["5a"],
                    _runs(g),
                    missing="fewer than 3 layers measured (train with --final-layers all)",
                )
            )
            continue
        profiles[g.label] = profile
        rho = _spearman(profile["depth"].to_numpy(float), profile["mean"].to_numpy(float))
        out.append(
            Finding(
                "5a",
                CLAIMS["5a"],
                _runs(g),
                epoch,
                checks=(
                    Check(
                        "Spearman(depth, NC1 clean)", rho, "<=", -t.layer_spearman, "layer_spearman"
                    ),
                ),
                context=(
                    ("layers", float(len(profile))),
                    ("NC1 clean first layer", float(profile["mean"].iloc[0])),
                    ("NC1 clean last layer", float(profile["mean"].iloc[-1])),
                ),
            )
        )
    if not out:
        out.append(Finding("5a", CLAIMS["5a"], "—", missing="no ST or AT run"))
    at = [g for g in study.groups_of(("at",)) if g.label in profiles]
    st = [g for g in study.groups_of(("st",)) if g.label in profiles]
    pairs = [(s, p) for s in st if (p := _partner(s, at, ("dataset", "model"))) is not None]
    if not pairs:
        out.append(
            Finding(
                "5b",
                CLAIMS["5b"],
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
                CLAIMS["5b"],
                _runs(s, a),
                study.layerwise_epoch(a.label),
                checks=(
                    Check(
                        "log10-NC1 slope AT - ST",
                        slope_a - slope_s,
                        ">",
                        t.layer_slope_margin,
                        "layer_slope_margin",
                    ),
                ),
                context=(("log10-NC1 slope ST", slope_s), ("log10-NC1 slope AT", slope_a)),
            )
        )
    return out


# -- finding 6 ----------------------------------------------------------------------------


def finding6(study: Study, t: Thresholds) -> list[Finding]:
    """ST: max over non-final layers of NCC accuracy on pgd data beats the network's."""
    groups = study.groups_of(("st",))
    if not groups:
        return [Finding("6", CLAIMS["6"], "—", missing="no ST run")]
    out = []
    for g in groups:
        measured_any = False
        for split in ("train", "test"):
            epoch, profile = _layer_profile(study, g.label, split, "pgd", "ncc_accuracy")
            order = study.layer_order(g.label)
            early = profile[profile["layer"].isin(order[:-1])]
            if epoch is None or early.empty:
                continue
            measured_any = True
            best = early.loc[early["mean"].idxmax()]
            robust = study.value(g.label, split, "pgd", OUTPUT_LAYER, "accuracy", epoch)
            out.append(
                Finding(
                    "6",
                    f"{CLAIMS['6']} ({split} data)",
                    _runs(g),
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
                    context=(
                        (f"NCC accuracy on pgd at {best['layer']}", float(best["mean"])),
                        ("network accuracy on pgd", robust),
                    ),
                )
            )
        if not measured_any:
            out.append(
                Finding(
                    "6",
                    CLAIMS["6"],
                    _runs(g),
                    missing="no layerwise NCC accuracy on pgd data (train with "
                    "--final-layers all and the pgd view)",
                )
            )
    return out


FINDINGS = (finding1, finding2, finding3, finding4, finding5, finding6)


def evaluate_findings(study: Study, thresholds: Thresholds | None = None) -> list[Finding]:
    """Every finding of the paper evaluated on ``study`` (one row per group or pair)."""
    t = thresholds or Thresholds()
    return [finding for evaluate in FINDINGS for finding in evaluate(study, t)]
