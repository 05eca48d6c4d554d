"""Findings read from the epoch-wise (penultimate-layer) measurements: Sections 3.1-3.2, Fig. 7
and Appendix H of the paper."""

from __future__ import annotations

import itertools
import math

import numpy as np

from ncrobust.study.aggregate import format_eps
from ncrobust.study.findings.claims import (
    BETWEEN_CLASS_ANGLE,
    CLAIMS,
    attack_moves_points,
    partner,
    ratio,
    runs_text,
    terminal,
)
from ncrobust.study.findings.thresholds import Thresholds
from ncrobust.study.findings.verdicts import Check, Finding
from ncrobust.study.study import Study, simplex_angle
from ncrobust.views import OUTPUT_LAYER, PENULTIMATE, parse_label


def _claim(key: str) -> str:
    return CLAIMS[key].statement


def _none(key: str, why: str, runs: str = "—") -> Finding:
    return Finding(key, _claim(key), runs, missing=why)


def _simplex(study: Study, label: str) -> float:
    classes = study.num_classes(label)
    return simplex_angle(classes) if classes and classes > 1 else math.nan


# -- 1 and 1b: ST perturbations destroy NC1 and the simplex ----------------------------------


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
        nc2 = {
            (v, m): study.value(g.label, "train", v, PENULTIMATE, m, epoch)
            for v in ("clean", "pgd")
            for m in ("nc2_equiangular", "nc2_equinorm")
        }
        out.append(
            Finding(
                "1b",
                _claim("1b"),
                runs_text(g),
                epoch,
                checks=(
                    Check(
                        "NC2 equiangular pgd / clean",
                        ratio(nc2["pgd", "nc2_equiangular"], nc2["clean", "nc2_equiangular"]),
                        ">=",
                        t.st_pgd_nc2_ratio,
                        "st_pgd_nc2_ratio",
                    ),
                ),
                context=tuple(
                    (f"NC2 {m.removeprefix('nc2_')} {v}", x) for (v, m), x in nc2.items()
                ),
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


def _drop(study: Study, label: str, view: str, epoch: int) -> tuple[float, float, int | None]:
    """(NC1 at ``epoch``, NC1 after the first epoch, that epoch); the ratio is the collapse."""
    final = study.value(label, "train", view, PENULTIMATE, "nc1", epoch)
    first = study.first_epoch(label, "train", view, PENULTIMATE, "nc1", after=0)
    if first is None or first >= epoch:
        return final, math.nan, first
    return final, study.value(label, "train", view, PENULTIMATE, "nc1", first), first


def finding3(study: Study, t: Thresholds) -> list[Finding]:
    """AT: NC1 of clean and perturbed data falls from its epoch-1 value, perturbed NC1 stays
    above clean, the perturbed simplex matches the clean one, NCC as robust as the network."""
    groups = study.groups_of(("at",))
    if not groups:
        return [_none("3", "no AT run")]
    out = []
    for g in groups:
        view = study.perturbed_view(g.label, "train")
        epoch = study.final_epoch(g.label, "train", "clean", PENULTIMATE, "nc1")
        if view is None or epoch is None:
            what = "clean NC1" if epoch is None else "a perturbed view (train_adv or pgd)"
            out.append(_none("3", f"{what} not measured on training data", runs_text(g)))
            continue
        classes = study.num_classes(g.label) or 0
        checks, context = [], []
        nc1 = {}
        for v in ("clean", view):
            final, first, first_epoch = _drop(study, g.label, v, epoch)
            nc1[v] = final
            checks.append(
                Check(
                    f"NC1 {v} final / after epoch {first_epoch}",
                    ratio(final, first),
                    "<=",
                    t.at_nc1_drop,
                    "at_nc1_drop",
                )
            )
            context.append((f"NC1 {v}", final))
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
                f"|NCC accuracy - accuracy| on {view}",
                abs(ncc - acc),
                "<=",
                t.at_ncc_gap,
                "at_ncc_gap",
            )
        )
        context += [
            (f"simplex similarity {view} (rad)", similarity),
            (f"NCC accuracy {view}", ncc),
            (f"accuracy {view}", acc),
        ]
        out.append(
            Finding(
                "3",
                _claim("3"),
                runs_text(g),
                epoch,
                checks=tuple(checks),
                context=tuple(context),
                preconditions=(terminal(study, g, epoch, t),),
            )
        )
    return out


# -- 4: TRADES ------------------------------------------------------------------------------------


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
            for m in ("nc1", "nc2_equiangular")
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
                    (f"{'NC1' if m == 'nc1' else 'NC2 equiangular'} clean {who}", v)
                    for (who, m), v in values.items()
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
        between = study.value(g.label, "train", "clean", PENULTIMATE, BETWEEN_CLASS_ANGLE, epoch)
        if math.isfinite(between):
            baseline, name = between, "clean between-class angle"
            note = "baseline: the run's non-centred angle between different clean class means"
        else:
            baseline, name = _simplex(study, g.label), "arccos(-1/(C-1))"
            note = (
                "baseline: arccos(-1/(C-1)) as the paper's Fig. 7 caption (the run records no "
                f"non-centred angle between clean class means, {BETWEEN_CLASS_ANGLE})"
            )
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


# -- 9a, 9b: Appendix H -----------------------------------------------------------------------


def finding9(study: Study, t: Thresholds) -> list[Finding]:
    """App. H: ST perturbed NC1 rises with the attack eps (9a); AT perturbed data collapse at
    every training eps (9b)."""
    out = []
    st = study.groups_of(("st",))
    for g in st:
        curves = study.eps_series(g.label, "train", "pgd", PENULTIMATE, "nc1")
        finals = {eps: float(c["mean"].iloc[-1]) for eps, c in curves.items() if len(c)}
        epochs = {eps: int(c["epoch"].iloc[-1]) for eps, c in curves.items() if len(c)}
        if len(finals) < 2:
            out.append(
                _none(
                    "9a",
                    "pgd measured at fewer than 2 eps (train with views pgd@eps=... or run "
                    "`ncrobust measure --eps`)",
                    runs_text(g),
                )
            )
            continue
        eps_values = sorted(finals)
        steps = [ratio(finals[b], finals[a]) for a, b in itertools.pairwise(eps_values)]
        epoch = min(epochs.values())
        out.append(
            Finding(
                "9a",
                _claim("9a"),
                runs_text(g),
                epoch,
                checks=(
                    Check(
                        "smallest NC1 ratio between consecutive eps",
                        min(steps),
                        ">",
                        t.eps_monotone_ratio,
                        "eps_monotone_ratio",
                    ),
                ),
                context=tuple((f"NC1 pgd eps={format_eps(e)}", finals[e]) for e in eps_values),
                preconditions=(terminal(study, g, epoch, t),),
            )
        )
    if not st:
        out.append(_none("9a", "no ST run"))
    families = study.eps_families(("at",))
    if not families:
        out.append(_none("9b", "needs AT runs that differ only in their training eps"))
    for family in families:
        checks, pre = [], []
        last = None
        for g in family:
            view = study.perturbed_view(g.label, "train")
            end = study.final_epoch(g.label, "train", "clean", PENULTIMATE, "nc1")
            if view is None or end is None:
                final, first, first_epoch = math.nan, math.nan, None
            else:
                final, first, first_epoch = _drop(study, g.label, view, end)
                last = end if last is None else max(last, end)
            checks.append(
                Check(
                    f"eps={format_eps(g.config.eps)}: NC1 {view} final / after epoch {first_epoch}",
                    ratio(final, first),
                    "<=",
                    t.at_nc1_drop,
                    "at_nc1_drop",
                )
            )
            pre.append(terminal(study, g, end, t))
        out.append(
            Finding(
                "9b",
                _claim("9b"),
                runs_text(*family),
                last,
                checks=tuple(checks),
                preconditions=tuple(pre),
            )
        )
    return out


__all__ = ["finding1", "finding2", "finding3", "finding4", "finding7", "finding9"]
