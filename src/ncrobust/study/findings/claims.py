"""The paper's claims as small declarative specs, and the helpers their evaluations share.

A :class:`Claim` says what is claimed, where the paper says it and which data it reads; the
statistic, comparison and threshold of each check are the :class:`Check` objects its evaluator
builds (thresholds and their sources in :mod:`.thresholds`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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
            "1",
            "ST: adversarial (pgd) perturbations destroy NC1 while Gaussian noise barely "
            "changes it",
            "Sec. 3.1, Fig. 2",
            "train NC1 of clean, pgd and gaussian data (penultimate), last epoch",
        ),
        Claim(
            "1b",
            "ST: adversarial perturbations also destroy the simplex (NC2 rises)",
            "Sec. 3.1 l.83-84, Fig. 2",
            "train NC2 equiangular of clean and pgd data (penultimate), last epoch",
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
            "train NC1 of clean and perturbed data over epochs, simplex similarity, NCC accuracy",
        ),
        Claim(
            "4",
            "TRADES: collapse roughly one order of magnitude weaker than AT, and no simplex",
            "Sec. 3.2 l.106-112, Fig. 4",
            "train clean NC1 and NC2 equiangular of TRADES and the matching AT run",
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
            "7",
            "ST untargeted attack: perturbed predicted-class means lie within a small angle of "
            "the predicted class's clean mean (the leap)",
            "Fig. 7",
            "attack statistics of pgd on train data: per-class angle between mu_c and mu'_c",
        ),
        Claim(
            "8",
            "ST layerwise: perturbed NC1 close to clean NC1 in early layers, diverging later",
            "App. G l.411-414, Fig. 11",
            "train NC1 of clean and pgd data at every layer",
        ),
        Claim(
            "9a",
            "ST: NC1 of perturbed data rises monotonically with the attack's eps",
            "App. H, Fig. 16",
            "train NC1 of pgd data at several eps (pgd@eps views or eps_study.parquet)",
        ),
        Claim(
            "9b",
            "AT: perturbed data collapse at every training eps",
            "App. H, Fig. 15",
            "train NC1 of the perturbed view of AT runs trained at several eps",
        ),
    )
}


def runs_text(*groups: RunGroup) -> str:
    return " vs ".join(
        f"{g.label} ({len(g.runs)} seed{'s' if len(g.runs) != 1 else ''})" for g in groups
    )


def ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else math.nan


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
