"""The paper's claims as small declarative specs, and the helpers their evaluations share.

A :class:`Claim` says what is claimed, where the paper says it and which data it reads; the
statistic, comparison and threshold of each check are the :class:`Check` objects its evaluator
builds (thresholds and their sources in :mod:`.thresholds`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ncrobust.study.aggregate import RunGroup
from ncrobust.study.findings.thresholds import Thresholds
from ncrobust.study.findings.verdicts import Check
from ncrobust.study.study import Study
from ncrobust.views import OUTPUT_LAYER

# a metric some runs record: the mean non-centred angle between different clean class means
BETWEEN_CLASS_ANGLE = "between_class_angle"


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: its statement, where it is made and what data it reads."""

    key: str
    statement: str
    source: str
    reads: str


CLAIMS: dict[str, Claim] = {
    c.key: c
    for c in (
        Claim(
            "0",
            "ST: clean Neural Collapse converges (terminal phase: NC1 falls by orders of "
            "magnitude, NC4 goes to 0)",
            "Sec. 3.1 l.79, Fig. 2",
            "train NC1 over epochs and NC4 at the last epoch, clean data (penultimate)",
        ),
        Claim(
            "1",
            "ST: adversarial (pgd) perturbations destroy NC1 while Gaussian noise barely "
            "changes it",
            "Sec. 3.1, Fig. 2",
            "train NC1 of clean, pgd and gaussian data (penultimate), last epoch",
        ),
        Claim(
            "1b",
            "ST: adversarial perturbations also destroy the simplex and the NCC agreement "
            "(NC2, NC3, NC4 rise)",
            "Sec. 3.1 l.80-84, Fig. 2",
            "train NC2 equiangular, NC3 and NC4 of clean and pgd data (penultimate), last epoch",
        ),
        Claim(
            "2",
            "ST targeted attack: perturbed class means land near the target class's clean mean",
            "Sec. 3.1 l.85-90, Fig. 3 left",
            "targeted view (grouped by target) vs clean train means; the run's between-class angle",
        ),
        Claim(
            "3",
            "AT: clean and perturbed data both collapse (perturbed less) onto the same simplex; "
            "NCC is as robust as the network",
            "Sec. 3.2, Figs. 2 and 3 right",
            "train NC1 of clean and perturbed data over epochs (fall from the early-phase peak), "
            "simplex similarity, NCC accuracy",
        ),
        Claim(
            "3b",
            "AT: the clean and Gaussian NC1 curves coincide",
            "Fig. 2 caption",
            "train NC1 of clean and gaussian data at every measured epoch",
        ),
        Claim(
            "3c",
            "AT: the non-centred perturbed class means vanish into the clean ones",
            "Sec. 3.2 l.98-100, Fig. 3 right",
            "train angular distance of the perturbed view to clean means; the angle between "
            "classes",
        ),
        Claim(
            "3d",
            "AT: the network agrees with the NCC rule on perturbed data (NC4)",
            "Sec. 3.2 l.103-105, Fig. 2 (NC4)",
            "train NC4 of the perturbed view, last epoch",
        ),
        Claim(
            "4",
            "TRADES: collapse roughly one order of magnitude weaker than AT, and no simplex",
            "Sec. 3.2 l.106-112, Fig. 4",
            "train clean NC1 and NC2 equiangular of TRADES and the matching AT run",
        ),
        Claim(
            "4b",
            "TRADES: the KL term of the loss is driven to zero on training data",
            "Sec. 3.2 l.108-109, App. D, Fig. 4",
            "training loss terms (kl_loss, ce_loss) of TRADES over epochs",
        ),
        Claim(
            "5a",
            "Layerwise: clean NC1 decreases with depth",
            "App. G l.409-410, Fig. 11",
            "clean train NC1 at every measured layer",
        ),
        Claim(
            "5b",
            "Layerwise: NC1 decreases more slowly with depth for AT than for ST",
            "App. G l.410-411, Fig. 11",
            "clean train NC1 at every layer of an ST and an AT run",
        ),
        Claim(
            "6",
            "ST: an early layer's NCC classifier is much more robust than the network",
            "App. G l.415-417, Fig. 12",
            "NCC accuracy on pgd data at every layer; network accuracy on pgd",
        ),
        Claim(
            "6b",
            "ST: the early-layer NCC robustness fades in the last layers",
            "App. G, Fig. 12",
            "NCC accuracy on pgd data at the last feature layer; network accuracy on pgd",
        ),
        Claim(
            "6c",
            "ST's early-layer NCC classifier is more robust than any layer's of AT",
            "App. G l.417-418, Fig. 12",
            "NCC accuracy on pgd data at every layer of an ST and an AT run",
        ),
        Claim(
            "6d",
            "ST: the early-layer NCC robustness survives an adaptive attack on the NCC rule",
            "beyond the paper: App. G l.419-421 asks what makes early layers robust; the NCC "
            "accuracy of Fig. 12 is measured under a transfer attack (on the network)",
            "NCC accuracy under PGD through the NCC rule (view ncc_adaptive) beside the transfer "
            "number (view pgd) at every early layer",
        ),
        Claim(
            "7",
            "ST untargeted attack: perturbed predicted-class means lie within a small angle of "
            "the predicted class's clean mean (the leap)",
            "Fig. 7",
            "attack statistics of pgd on train data: per-class angle between mu_c and mu'_c",
        ),
        Claim(
            "7b",
            "ST untargeted attack: perturbed predictions concentrate on few classes",
            "Fig. 7 left",
            "attack statistics of pgd and gaussian data on train: predicted-label counts",
        ),
        Claim(
            "8",
            "ST layerwise: perturbed NC1 close to clean NC1 in early layers, diverging later",
            "App. G l.411-414, Fig. 11",
            "train NC1 of clean and pgd data at every layer",
        ),
        Claim(
            "9a",
            "ST: NC metrics of perturbed data rise monotonically with the attack's eps",
            "App. H l.427-429, Fig. 16",
            "train NC1 (and NC2 equiangular, NC3, NC4 where measured) of pgd data at several "
            "eps (pgd@eps views or eps_study.parquet)",
        ),
        Claim(
            "9b",
            "AT: a larger training eps gives more collapse on data perturbed at one common eps",
            "App. H l.425-427, Fig. 15",
            "train NC1 (and NC2-NC4 where measured) of pgd data at the family's largest "
            "training eps, for AT runs trained at several eps",
        ),
    )
}


def runs_text(*groups: RunGroup) -> str:
    return " vs ".join(
        f"{g.label} ({len(g.runs)} seed{'s' if len(g.runs) != 1 else ''})" for g in groups
    )


def ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else math.nan


def rise(a: float, b: float) -> float:
    """``a / b`` for a quantity that may reach 0 exactly (NC4 of fully collapsed data): infinite
    when ``b`` is 0 and ``a`` is not."""
    if math.isfinite(a) and math.isfinite(b) and b == 0 and a >= 0:
        return math.inf if a > 0 else math.nan
    return ratio(a, b)


def terminal(study: Study, group: RunGroup, epoch: int | None, t: Thresholds) -> Check:
    """Precondition: the run reached the terminal phase (robust training accuracy for AT)."""
    view = "clean"
    if group.mode == "at":
        view = study.perturbed_view(group.label, "train") or "clean"
    value = (
        math.nan
        if epoch is None
        else study.value(group.label, "train", view, OUTPUT_LAYER, "accuracy", epoch)
    )
    return Check(
        f"training accuracy ({view})", value, ">=", t.terminal_accuracy, "terminal_accuracy"
    )


def attack_moves_points(study: Study, group: RunGroup, epoch: int, t: Thresholds) -> Check:
    """Precondition: the untargeted attack misleads the network on most points."""
    value = study.value(group.label, "train", "pgd", OUTPUT_LAYER, "accuracy", epoch)
    return Check("network accuracy on pgd", value, "<=", t.attack_success, "attack_success")


def early_peak(curve: pd.DataFrame, end: int, t: Thresholds) -> tuple[float, float]:
    """(the curve's peak over its early phase, where that phase ends) for a curve with
    columns ``epoch, mean`` that ends at epoch ``end``.

    The early phase is ``[0, early_phase * end]``; the curve's value at its end is interpolated
    between the measured epochs around it (log-linearly when positive), so the peak does not
    depend on how often the run was measured.
    """
    curve = curve[curve["epoch"] <= end]
    if curve.empty:
        return math.nan, math.nan
    horizon = t.early_phase * end
    epochs = curve["epoch"].to_numpy(dtype=float)
    values = curve["mean"].to_numpy(dtype=float)
    inside = list(values[epochs <= horizon])
    if epochs[0] <= horizon <= epochs[-1]:
        positive = bool((values > 0).all())
        y = np.log(values) if positive else values
        at = float(np.interp(horizon, epochs, y))
        inside.append(math.exp(at) if positive else at)
    return (max(inside) if inside else math.nan), horizon


def fall(
    study: Study, label: str, key: tuple[str, str, str, str], epoch: int, t: Thresholds
) -> tuple[float, float, str]:
    """(value at ``epoch``, :func:`early_peak`, the phase as text) of the curve of ``key`` =
    ``(split, view, layer, metric)``: a criterion on the fall the measurement cadence does not
    change."""
    curve = study.series(label, *key)
    final = study.value(label, *key, epoch)
    peak, horizon = early_peak(curve, epoch, t)
    return final, peak, f"early-phase peak (epochs 0-{horizon:g})"


PAIR_FIELDS = ("dataset", "model", "norm", "eps")


def partner(
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
