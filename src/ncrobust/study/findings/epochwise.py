"""Findings read from the epoch-wise (penultimate-layer) measurements: Sections 3.1-3.2, Fig. 7
and Appendix H of the paper."""

from __future__ import annotations

import itertools
import math

import numpy as np

from ncrobust.study.aggregate import RunGroup, format_eps
from ncrobust.study.findings.claims import (
    BETWEEN_CLASS_ANGLE,
    CLAIMS,
    attack_moves_points,
    fall,
    partner,
    ratio,
    rise,
    runs_text,
    terminal,
)
from ncrobust.study.findings.thresholds import Thresholds
from ncrobust.study.findings.verdicts import Check, Finding
from ncrobust.study.study import Study, simplex_angle
from ncrobust.views import FIT_VIEW, OUTPUT_LAYER, PENULTIMATE, parse_label


def _claim(key: str) -> str:
    return CLAIMS[key].statement


def _none(key: str, why: str, runs: str = "—") -> Finding:
    return Finding(key, _claim(key), runs, missing=why)


def _per_class(study: Study, label: str, nc1: float) -> float:
    """NC1 / (C-1): NC1 per between-class direction."""
    classes = study.num_classes(label) or 0
    return nc1 / (classes - 1) if classes > 1 else math.nan


def _simplex(study: Study, label: str) -> float:
    classes = study.num_classes(label)
    return simplex_angle(classes) if classes and classes > 1 else math.nan


# -- 0: ST clean collapse converges ---------------------------------------------------------


def finding0(study: Study, t: Thresholds) -> list[Finding]:
    """ST: clean NC1 falls from its early-phase peak by orders of magnitude and NC4 reaches 0."""
    groups = study.groups_of(("st",))
    if not groups:
        return [_none("0", "no ST run")]
    out = []
    for g in groups:
        epoch = study.final_epoch(g.label, "train", "clean", PENULTIMATE, "nc1")
        if epoch is None:
            out.append(_none("0", "clean NC1 not measured", runs_text(g)))
            continue
        final, peak, phase = fall(study, g.label, ("train", "clean", PENULTIMATE, "nc1"), epoch, t)
        nc4 = study.value(g.label, "train", "clean", PENULTIMATE, "nc4", epoch)
        out.append(
            Finding(
                "0",
                _claim("0"),
                runs_text(g),
                epoch,
                checks=(
                    Check(
                        f"NC1 clean final / {phase}",
                        ratio(final, peak),
                        "<=",
                        t.st_clean_nc1_drop,
                        "st_clean_nc1_drop",
                    ),
                    Check("NC4 clean", nc4, "<=", t.st_clean_nc4, "st_clean_nc4"),
                ),
                context=(("NC1 clean", final), ("NC1 clean early-phase peak", peak)),
                notes=(
                    "the reference is the curve's own early peak, interpolated at the end of "
                    "the early phase: the measurement cadence does not change it",
                ),
            )
        )
    return out


# -- 1 and 1b: ST perturbations destroy NC1 and the simplex ----------------------------------

# the structure metrics beside NC1 (judged where measured; NC2 equiangular always)
STRUCTURE = {"nc2_equiangular": "NC2 equiangular", "nc3": "NC3", "nc4": "NC4"}


def finding1(study: Study, t: Thresholds) -> list[Finding]:
    """ST: pgd NC1 ≫ clean NC1, Gaussian NC1 ≈ clean NC1 (1); pgd NC2 ≫ clean NC2 (1b)."""
    groups = study.groups_of(("st",))
    if not groups:
        return [_none("1", "no ST run"), _none("1b", "no ST run")]
    out = []
    for g in groups:
        epoch = study.final_epoch(g.label, "train", "clean", PENULTIMATE, "nc1")
        if epoch is None:
            out += [_none(k, "clean NC1 not measured", runs_text(g)) for k in ("1", "1b")]
            continue
        pre = (terminal(study, g, epoch, t), attack_moves_points(study, g, epoch, t))
        nc1 = {
            v: study.value(g.label, "train", v, PENULTIMATE, "nc1", epoch)
            for v in ("clean", "pgd", "gaussian")
        }
        absent = [v for v in ("pgd", "gaussian") if not math.isfinite(nc1[v])]
        missing = f"view(s) {', '.join(absent)} not measured at epoch {epoch}" if absent else ""
        out.append(
            Finding(
                "1",
                _claim("1"),
                runs_text(g),
                epoch,
                checks=(
                    Check(
                        "NC1 pgd / clean",
                        ratio(nc1["pgd"], nc1["clean"]),
                        ">=",
                        t.st_pgd_nc1_ratio,
                        "st_pgd_nc1_ratio",
                    ),
                    Check(
                        "NC1 pgd / (C-1)",
                        _per_class(study, g.label, nc1["pgd"]),
                        ">=",
                        t.st_pgd_nc1_per_class,
                        "st_pgd_nc1_per_class",
                    ),
                    Check(
                        "NC1 gaussian / clean",
                        ratio(nc1["gaussian"], nc1["clean"]),
                        "<=",
                        t.st_gaussian_nc1_ratio,
                        "st_gaussian_nc1_ratio",
                    ),
                ),
                context=tuple((f"NC1 {v}", nc1[v]) for v in nc1),
                missing=missing,
                preconditions=pre,
            )
        )
        structure = {
            (v, m): study.value(g.label, "train", v, PENULTIMATE, m, epoch)
            for v in ("clean", "pgd")
            for m in STRUCTURE
        }
        out.append(
            Finding(
                "1b",
                _claim("1b"),
                runs_text(g),
                epoch,
                checks=tuple(
                    Check(
                        f"{name} pgd / clean",
                        rise(structure["pgd", m], structure["clean", m]),
                        ">=",
                        t.st_pgd_nc2_ratio,
                        "st_pgd_nc2_ratio",
                    )
                    for m, name in STRUCTURE.items()
                    if m == "nc2_equiangular" or math.isfinite(structure["pgd", m])
                ),
                context=tuple((f"{STRUCTURE[m]} {v}", x) for (v, m), x in structure.items()),
                missing="" if math.isfinite(nc1["pgd"]) else f"pgd not measured at epoch {epoch}",
                preconditions=pre,
            )
        )
    return out


# -- 2: the targeted leap ---------------------------------------------------------------------


def finding2(study: Study, t: Thresholds) -> list[Finding]:
    """ST targeted: targeted class means (by target) within a small angle of the clean ones,
    relative to the run's own angle between different classes."""
    groups = study.groups_of(("st",))
    if not groups:
        return [_none("2", "no ST run")]
    out = []
    for g in groups:
        view = study.targeted_view(g.label, "train")
        epoch = (
            None
            if view is None
            else study.final_epoch(g.label, "train", view, PENULTIMATE, "simplex_similarity")
        )
        if view is None or epoch is None:
            out.append(
                _none("2", "targeted view not measured (--views ...,targeted)", runs_text(g))
            )
            continue
        eps = parse_label(view).eps
        eps = float(g.config.eps) if eps is None else eps
        centred = study.value(g.label, "train", view, PENULTIMATE, "simplex_similarity", epoch)
        angle = study.value(g.label, "train", view, PENULTIMATE, "angular_distance", epoch)
        between = study.value(g.label, "train", "clean", PENULTIMATE, BETWEEN_CLASS_ANGLE, epoch)
        simplex = _simplex(study, g.label)
        checks = [
            Check(
                "simplex similarity targeted vs clean / arccos(-1/(C-1))",
                ratio(centred, simplex),
                "<=",
                t.targeted_angle_fraction,
                "targeted_angle_fraction",
            )
        ]
        notes = [f"targeted view {view} (eps {format_eps(eps)})"]
        if math.isfinite(between):
            checks.append(
                Check(
                    "angular distance targeted vs clean / clean between-class angle",
                    ratio(angle, between),
                    "<=",
                    t.targeted_angle_fraction,
                    "targeted_angle_fraction",
                )
            )
        else:
            notes.append(
                "the non-centred angular distance is shown, not judged: the run records no "
                f"non-centred angle between different clean class means ({BETWEEN_CLASS_ANGLE}), "
                "its only fair baseline"
            )
        target = study.value(g.label, "train", view, OUTPUT_LAYER, "target_accuracy", epoch)
        out.append(
            Finding(
                "2",
                _claim("2"),
                runs_text(g),
                epoch,
                checks=tuple(checks),
                context=(
                    ("targeted attack eps", eps),
                    ("simplex similarity targeted (rad)", centred),
                    ("arccos(-1/(C-1)) (rad)", simplex),
                    ("angular distance targeted (rad)", angle),
                    ("clean between-class angle (rad)", between),
                ),
                preconditions=(
                    terminal(study, g, epoch, t),
                    Check(
                        "target accuracy", target, ">=", t.targeted_accuracy, "targeted_accuracy"
                    ),
                ),
                notes=tuple(notes),
            )
        )
    return out


# -- 3: AT collapses on clean and perturbed data -------------------------------------------------


def finding3(study: Study, t: Thresholds) -> list[Finding]:
    """AT: NC1 of clean and perturbed data falls from its early-phase peak, perturbed NC1 stays
    above clean, the perturbed simplex matches the clean one, NCC as robust as the network (3);
    clean and Gaussian NC1 coincide (3b); the non-centred means coincide (3c); NC4 on perturbed
    data (3d)."""
    groups = study.groups_of(("at",))
    if not groups:
        return [_none(k, "no AT run") for k in ("3", "3b", "3c", "3d")]
    out = []
    for g in groups:
        view = study.perturbed_view(g.label, "train")
        epoch = study.final_epoch(g.label, "train", "clean", PENULTIMATE, "nc1")
        if view is None or epoch is None:
            what = "clean NC1" if epoch is None else "a perturbed view (train_adv or pgd)"
            why = f"{what} not measured on training data"
            out += [_none(k, why, runs_text(g)) for k in ("3", "3b", "3c", "3d")]
            continue
        pre = (terminal(study, g, epoch, t),)
        out += [
            _at_collapse(study, g, view, epoch, pre, t),
            _at_gaussian(study, g, epoch, pre, t),
            _at_same_means(study, g, view, epoch, pre, t),
            _at_nc4(study, g, view, epoch, pre, t),
        ]
    return out


def _at_collapse(
    study: Study, g: RunGroup, view: str, epoch: int, pre: tuple[Check, ...], t: Thresholds
) -> Finding:
    classes = study.num_classes(g.label) or 0
    checks, context = [], []
    nc1 = {}
    for v in ("clean", view):
        final, peak, phase = fall(study, g.label, ("train", v, PENULTIMATE, "nc1"), epoch, t)
        nc1[v] = final
        checks.append(
            Check(
                f"NC1 {v} final / {phase}", ratio(final, peak), "<=", t.at_nc1_drop, "at_nc1_drop"
            )
        )
        context += [(f"NC1 {v}", final), (f"NC1 {v} early-phase peak", peak)]
        if classes > 1:
            context.append((f"NC1 {v} / (C-1)", final / (classes - 1)))
    checks.append(
        Check(
            f"NC1 {view} / clean",
            ratio(nc1[view], nc1["clean"]),
            ">=",
            t.at_perturbed_above_clean,
            "at_perturbed_above_clean",
        )
    )
    similarity = study.value(g.label, "train", view, PENULTIMATE, "simplex_similarity", epoch)
    checks.append(
        Check(
            f"simplex similarity {view} vs clean / arccos(-1/(C-1))",
            ratio(similarity, _simplex(study, g.label)),
            "<=",
            t.at_simplex_fraction,
            "at_simplex_fraction",
        )
    )
    ncc = study.value(g.label, "train", view, PENULTIMATE, "ncc_accuracy", epoch)
    acc = study.value(g.label, "train", view, OUTPUT_LAYER, "accuracy", epoch)
    checks.append(
        Check(
            f"|NCC accuracy - accuracy| on {view}", abs(ncc - acc), "<=", t.at_ncc_gap, "at_ncc_gap"
        )
    )
    context += [
        (f"simplex similarity {view} (rad)", similarity),
        (f"NCC accuracy {view}", ncc),
        (f"accuracy {view}", acc),
    ]
    return Finding(
        "3",
        _claim("3"),
        runs_text(g),
        epoch,
        checks=tuple(checks),
        context=tuple(context),
        preconditions=pre,
        notes=(
            "each fall is measured from the curve's own early peak, interpolated at the end of "
            "the early phase: the measurement cadence does not change it",
        ),
    )


def _at_gaussian(
    study: Study, g: RunGroup, epoch: int, pre: tuple[Check, ...], t: Thresholds
) -> Finding:
    """3b: the largest factor between gaussian and clean NC1 over the epochs both measured."""
    clean = study.series(g.label, "train", "clean", PENULTIMATE, "nc1")
    noisy = study.series(g.label, "train", "gaussian", PENULTIMATE, "nc1")
    both = clean.merge(noisy, on="epoch", suffixes=("_clean", "_gaussian"))
    both = both[both["epoch"] <= epoch]
    if both.empty:
        return _none("3b", "gaussian NC1 not measured on training data", runs_text(g))
    a, b = both["mean_clean"].to_numpy(float), both["mean_gaussian"].to_numpy(float)
    factor = (
        float(np.max(np.maximum(a / b, b / a))) if (a > 0).all() and (b > 0).all() else math.nan
    )
    return Finding(
        "3b",
        _claim("3b"),
        runs_text(g),
        epoch,
        checks=(
            Check(
                "largest factor between NC1 gaussian and clean over epochs",
                factor,
                "<=",
                t.at_gaussian_match,
                "at_gaussian_match",
            ),
        ),
        context=(("epochs compared", float(len(both))),),
        preconditions=pre,
    )


def _between(study: Study, label: str, epoch: int) -> tuple[float, str, str]:
    """(the angle between classes, its name, a note): the run's non-centred angle between
    clean class means when recorded, else arccos(-1/(C-1)) as the paper's Fig. 7 caption."""
    between = study.value(label, "train", "clean", PENULTIMATE, BETWEEN_CLASS_ANGLE, epoch)
    if math.isfinite(between):
        return (
            between,
            "clean between-class angle",
            "baseline: the run's non-centred angle between different clean class means",
        )
    return (
        _simplex(study, label),
        "arccos(-1/(C-1))",
        "baseline: arccos(-1/(C-1)) as the paper's Fig. 7 caption (the run records no "
        f"non-centred angle between clean class means, {BETWEEN_CLASS_ANGLE})",
    )


def _at_same_means(
    study: Study, g: RunGroup, view: str, epoch: int, pre: tuple[Check, ...], t: Thresholds
) -> Finding:
    """3c: the non-centred angular distance of Fig. 3 (right) against the angle between
    classes."""
    angle = study.value(g.label, "train", view, PENULTIMATE, "angular_distance", epoch)
    baseline, name, note = _between(study, g.label, epoch)
    return Finding(
        "3c",
        _claim("3c"),
        runs_text(g),
        epoch,
        checks=(
            Check(
                f"angular distance {view} vs clean / {name}",
                ratio(angle, baseline),
                "<=",
                t.at_simplex_fraction,
                "at_simplex_fraction",
            ),
        ),
        context=((f"angular distance {view} (rad)", angle), (f"{name} (rad)", baseline)),
        preconditions=pre,
        notes=(note,),
    )


def _at_nc4(
    study: Study, g: RunGroup, view: str, epoch: int, pre: tuple[Check, ...], t: Thresholds
) -> Finding:
    """3d: NC4 (network vs NCC disagreement) of the perturbed view."""
    nc4 = study.value(g.label, "train", view, PENULTIMATE, "nc4", epoch)
    return Finding(
        "3d",
        _claim("3d"),
        runs_text(g),
        epoch,
        checks=(Check(f"NC4 {view}", nc4, "<=", t.at_ncc_gap, "at_ncc_gap"),),
        context=(("NC4 clean", study.value(g.label, "train", "clean", PENULTIMATE, "nc4", epoch)),),
        preconditions=pre,
    )


# -- 4: TRADES ------------------------------------------------------------------------------------


# judged: NC1 and NC2 equiangular (the paper's text); shown beside them: the other NC metrics
TRADES_SHOWN = {"nc1": "NC1", "nc2_equinorm": "NC2 equinorm", **STRUCTURE}


def finding4(study: Study, t: Thresholds) -> list[Finding]:
    """TRADES vs AT (same dataset, model, norm, eps): NC1 about 10x larger, NC2 far from a simplex.

    Each TRADES group is judged on its own, so TRADES with frozen BN (as released) and the
    original TRADES get one row each against the same AT run.
    """
    trades = study.groups_of(("trades",))
    at = study.groups_of(("at",))
    if not trades or not at:
        return [_none("4", "needs both a TRADES and an AT run")]
    out = []
    for g in trades:
        other = partner(g, at)
        if other is None:
            out.append(
                _none("4", "no AT run with the same dataset, model, norm and eps", runs_text(g))
            )
            continue
        epoch_t = study.final_epoch(g.label, "train", "clean", PENULTIMATE, "nc1")
        epoch_a = study.final_epoch(other.label, "train", "clean", PENULTIMATE, "nc1")
        values = {
            (who, m): study.value(label, "train", "clean", PENULTIMATE, m, ep)
            for who, label, ep in (("TRADES", g.label, epoch_t), ("AT", other.label, epoch_a))
            for m in TRADES_SHOWN
        }
        out.append(
            Finding(
                "4",
                _claim("4"),
                runs_text(g, other),
                epoch_t,
                checks=(
                    Check(
                        "NC1 clean TRADES / AT",
                        ratio(values["TRADES", "nc1"], values["AT", "nc1"]),
                        ">=",
                        t.trades_nc1_ratio,
                        "trades_nc1_ratio",
                    ),
                    Check(
                        "NC2 equiangular clean TRADES / AT",
                        ratio(values["TRADES", "nc2_equiangular"], values["AT", "nc2_equiangular"]),
                        ">=",
                        t.trades_nc2_ratio,
                        "trades_nc2_ratio",
                    ),
                ),
                context=tuple(
                    (f"{TRADES_SHOWN[m]} clean {who}", v)
                    for (who, m), v in values.items()
                    if m in ("nc1", "nc2_equiangular") or math.isfinite(v)
                ),
                preconditions=(terminal(study, g, epoch_t, t), terminal(study, other, epoch_a, t)),
                notes=(
                    "TRADES with BN frozen in eval mode (as released)"
                    if g.config.trades_bn_eval
                    else "TRADES with BN in train mode (original TRADES)",
                ),
            )
        )
    return out


def finding4b(study: Study, t: Thresholds) -> list[Finding]:
    """TRADES: the KL term of the training loss falls from its early-phase peak to near 0."""
    groups = study.groups_of(("trades",))
    if not groups:
        return [_none("4b", "no TRADES run")]
    out = []
    for g in groups:
        key = ("train", FIT_VIEW, OUTPUT_LAYER, "kl_loss")
        epoch = study.final_epoch(g.label, *key)
        if epoch is None:
            out.append(
                _none("4b", "the KL term of the training loss was not recorded", runs_text(g))
            )
            continue
        final, peak, phase = fall(study, g.label, key, epoch, t)
        ce = study.value(g.label, "train", FIT_VIEW, OUTPUT_LAYER, "ce_loss", epoch)
        out.append(
            Finding(
                "4b",
                _claim("4b"),
                runs_text(g),
                epoch,
                checks=(
                    Check(
                        f"KL term final / {phase}",
                        ratio(final, peak),
                        "<=",
                        t.trades_kl_drop,
                        "trades_kl_drop",
                    ),
                ),
                context=(("KL term", final), ("KL term early-phase peak", peak), ("CE term", ce)),
                preconditions=(terminal(study, g, epoch, t),),
            )
        )
    return out


# -- 7: the untargeted leap (Fig. 7) ----------------------------------------------------------


def finding7(study: Study, t: Thresholds) -> list[Finding]:
    """ST: mean angle between μ_c and the perturbed predicted-class mean μ′_c is a small
    fraction of the angle between classes (the paper: 0.2 rad against 1.58 rad)."""
    groups = study.groups_of(("st",))
    if not groups:
        return [_none("7", "no ST run")]
    stats = study.stats
    out = []
    for g in groups:
        rows = stats[
            (stats["group"] == g.label)
            & (stats["split"] == "train")
            & (stats["view"] == "pgd")
            & (stats["layer"] == PENULTIMATE)
            & (stats["statistic"] == "angle")
        ]
        if rows.empty:
            out.append(_none("7", "no attack statistics of pgd on train data", runs_text(g)))
            continue
        epoch = int(rows["epoch"].max())
        angles = rows.loc[rows["epoch"] == epoch, "mean"].to_numpy(dtype=float)
        angle = float(np.nanmean(angles)) if np.isfinite(angles).any() else math.nan
        baseline, name, note = _between(study, g.label, epoch)
        out.append(
            Finding(
                "7",
                _claim("7"),
                runs_text(g),
                epoch,
                checks=(
                    Check(
                        f"mean angle(mu_c, mu'_c) / {name}",
                        ratio(angle, baseline),
                        "<=",
                        t.leap_angle_fraction,
                        "leap_angle_fraction",
                    ),
                ),
                context=(("mean angle(mu_c, mu'_c) (rad)", angle), (f"{name} (rad)", baseline)),
                preconditions=(
                    terminal(study, g, epoch, t),
                    attack_moves_points(study, g, epoch, t),
                ),
                notes=(note,),
            )
        )
    return out


COUNTS = ("predicted_count", "counts")  # the statistic's name, then its older name


def _effective_classes(study: Study, label: str, view: str) -> tuple[float, int | None]:
    """(exp of the entropy of the predicted-label counts of ``view`` on training data at its
    last epoch, that epoch): how many classes the predictions effectively spread over."""
    stats = study.stats
    rows = stats[
        (stats["group"] == label)
        & (stats["split"] == "train")
        & (stats["view"] == view)
        & (stats["layer"] == PENULTIMATE)
        & stats["statistic"].isin(COUNTS)
    ]
    if rows.empty:
        return math.nan, None
    epoch = int(rows["epoch"].max())
    counts = rows.loc[rows["epoch"] == epoch, "mean"].to_numpy(dtype=float)
    counts = counts[np.isfinite(counts) & (counts > 0)]
    if counts.sum() <= 0:
        return math.nan, epoch
    p = counts / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum())), epoch


def finding7b(study: Study, t: Thresholds) -> list[Finding]:
    """ST: predictions on pgd data spread over fewer classes than on gaussian data (Fig. 7
    left), counted as the effective number of predicted classes."""
    groups = study.groups_of(("st",))
    if not groups:
        return [_none("7b", "no ST run")]
    out = []
    for g in groups:
        pgd, epoch = _effective_classes(study, g.label, "pgd")
        gaussian, _ = _effective_classes(study, g.label, "gaussian")
        if epoch is None or not math.isfinite(gaussian):
            why = "no predicted-label counts of pgd and gaussian training data"
            out.append(_none("7b", why, runs_text(g)))
            continue
        out.append(
            Finding(
                "7b",
                _claim("7b"),
                runs_text(g),
                epoch,
                checks=(
                    Check(
                        "effective predicted classes pgd / gaussian",
                        ratio(pgd, gaussian),
                        "<=",
                        t.label_skew,
                        "label_skew",
                    ),
                ),
                context=(
                    ("effective predicted classes pgd", pgd),
                    ("effective predicted classes gaussian", gaussian),
                    ("classes", float(study.num_classes(g.label) or math.nan)),
                ),
                preconditions=(
                    terminal(study, g, epoch, t),
                    attack_moves_points(study, g, epoch, t),
                ),
                notes=("effective classes: exp of the entropy of the predicted-label counts",),
            )
        )
    return out


# -- 9a, 9b: Appendix H -----------------------------------------------------------------------


EPS_METRICS = {"nc1": "NC1", **STRUCTURE}


def _rising(values: dict[float, float]) -> float:
    """The smallest ratio of consecutive values in the order of their keys."""
    keys = sorted(values)
    return min(ratio(values[b], values[a]) for a, b in itertools.pairwise(keys))


def _at_radius(study: Study, label: str, metric: str, eps: float) -> tuple[float, int | None]:
    """(the last value of ``metric`` on training data attacked by pgd at radius ``eps``,
    its epoch); NaN when that radius was not measured."""
    curves = study.eps_series(label, "train", "pgd", PENULTIMATE, metric)
    curve = curves.get(float(f"{eps:.6g}"))
    if curve is None or curve.empty:
        return math.nan, None
    return float(curve["mean"].iloc[-1]), int(curve["epoch"].iloc[-1])


def finding9(study: Study, t: Thresholds) -> list[Finding]:
    """App. H: ST perturbed NC metrics rise with the attack eps (9a, Fig. 16); AT runs trained
    at a larger eps collapse more on data attacked at one common eps (9b, Fig. 15)."""
    out = []
    st = study.groups_of(("st",))
    for g in st:
        finals: dict[str, dict[float, float]] = {}
        epochs: list[int] = []
        for metric in EPS_METRICS:
            curves = study.eps_series(g.label, "train", "pgd", PENULTIMATE, metric)
            finals[metric] = {eps: float(c["mean"].iloc[-1]) for eps, c in curves.items()}
            epochs += [int(c["epoch"].iloc[-1]) for c in curves.values()]
        if len(finals["nc1"]) < 2:
            out.append(
                _none(
                    "9a",
                    "pgd measured at fewer than 2 eps (train with views pgd@eps=... or run "
                    "`ncrobust measure --eps`)",
                    runs_text(g),
                )
            )
            continue
        epoch = min(epochs)
        out.append(
            Finding(
                "9a",
                _claim("9a"),
                runs_text(g),
                epoch,
                checks=tuple(
                    Check(
                        f"smallest {name} ratio between consecutive attack eps",
                        _rising(finals[metric]),
                        ">",
                        t.eps_monotone_ratio,
                        "eps_monotone_ratio",
                    )
                    for metric, name in EPS_METRICS.items()
                    if len(finals[metric]) >= 2
                ),
                context=tuple(
                    (f"NC1 pgd eps={format_eps(e)}", v) for e, v in sorted(finals["nc1"].items())
                ),
                preconditions=(terminal(study, g, epoch, t),),
            )
        )
    if not st:
        out.append(_none("9a", "no ST run"))
    families = study.eps_families(("at",))
    if not families:
        out.append(_none("9b", "needs AT runs that differ only in their training eps"))
    for family in families:
        out.append(_at_eps_family(study, family, t))
    return out


def _at_eps_family(study: Study, family: list[RunGroup], t: Thresholds) -> Finding:
    """9b: every run of the family attacked by pgd at the family's largest training eps (as
    Fig. 15 at 8/255); the NC metrics fall as the training eps grows."""
    common = max(float(g.config.eps) for g in family)
    values: dict[str, dict[float, float]] = {m: {} for m in EPS_METRICS}
    epochs: dict[float, int | None] = {}
    for g in family:
        for metric in EPS_METRICS:
            value, epoch = _at_radius(study, g.label, metric, common)
            values[metric][float(g.config.eps)] = value
            if metric == "nc1":
                epochs[float(g.config.eps)] = epoch
    runs = runs_text(*family)
    absent = [format_eps(e) for e, v in values["nc1"].items() if not math.isfinite(v)]
    if absent:
        return _none(
            "9b",
            f"pgd at the common eps {format_eps(common)} not measured on the runs trained at "
            f"eps {', '.join(absent)} (train with views pgd@eps={common:.6g})",
            runs,
        )
    # a falling sequence over training eps is a rising one over -eps
    checks = tuple(
        Check(
            f"smallest {name} ratio between consecutive training eps (smaller eps / larger), "
            f"pgd at eps {format_eps(common)}",
            _rising({-e: v for e, v in values[metric].items()}),
            ">",
            t.eps_monotone_ratio,
            "eps_monotone_ratio",
        )
        for metric, name in EPS_METRICS.items()
        if all(math.isfinite(v) for v in values[metric].values())
    )
    last = max(e for e in epochs.values() if e is not None)
    return Finding(
        "9b",
        _claim("9b"),
        runs,
        last,
        checks=checks,
        context=tuple(
            (f"NC1 pgd eps={format_eps(common)}, trained at eps={format_eps(e)}", v)
            for e, v in sorted(values["nc1"].items())
        ),
        preconditions=tuple(terminal(study, g, epochs[float(g.config.eps)], t) for g in family),
        notes=(f"every run attacked by pgd at eps {format_eps(common)} (Fig. 15: 8/255)",),
    )


__all__ = [
    "finding0",
    "finding1",
    "finding2",
    "finding3",
    "finding4",
    "finding4b",
    "finding7",
    "finding7b",
    "finding9",
]
