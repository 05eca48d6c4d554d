"""A view whose labels miss a class: the metrics that stay defined, and the ones reported missing.

Class means, NC1, NC2, NC3, NC4 and the simplex comparisons need a sample of every class; the
network's accuracy and loss do not, and neither does the nearest-class-centre classifier of a
*reference* set's means (the clean train split's), so a small test split that lacks a class still
gets its accuracy, loss, ``ncc_accuracy`` and ``ncc_match``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# What a complete view of a layer reports, by what each group needs.
OWN_MEANS = ("nc1", "nc2_equinorm", "nc2_equiangular", "nc4")
WEIGHT_METRICS = ("nc2_equinorm_w", "nc2_equiangular_w", "nc3", "nc3_frobenius")
NCC_METRICS = ("ncc_accuracy", "ncc_match")
SIMPLEX_METRICS = ("simplex_similarity", "angular_distance")


def absent_classes(labels: Tensor, num_classes: int) -> list[int]:
    """The classes in [0, num_classes) with no sample in ``labels`` (one host sync)."""
    counts = torch.bincount(labels.flatten(), minlength=num_classes)[:num_classes]
    return (counts == 0).nonzero().flatten().tolist()


def missing_metrics(*, weight: bool, reference: bool, self_reference: bool) -> list[str]:
    """Names a complete view of a layer would report but a view missing a class cannot: every
    metric of the view's own class means (NCC against a reference stays defined)."""
    names = list(OWN_MEANS)
    if weight:
        names += WEIGHT_METRICS
    if self_reference:
        names += NCC_METRICS
    if reference:
        names += SIMPLEX_METRICS
    return names


class ReferenceNCC:
    """``ncc_accuracy`` and ``ncc_match`` of features against fixed reference class means.

    The nearest centre argmin_c ‖h − μ_c‖² is taken as argmin_c ‖μ_c − g‖² − 2⟨h − g, μ_c − g⟩
    with g the reference global mean, in float64 (centring keeps the rounding error small, as in
    the collapse accumulator). One pass; any batch order.
    """

    def __init__(self, means: Tensor, global_mean: Tensor) -> None:
        self.centre = global_mean.detach().to(torch.float64)
        self.centred = means.detach().to(torch.float64) - self.centre  # C×p, μ_c − g
        self.offsets = self.centred.square().sum(1)  # ‖μ_c − g‖²
        self.totals = torch.zeros(3, dtype=torch.float64, device=self.centred.device)

    def update(self, features: Tensor, labels: Tensor, logits: Tensor) -> None:
        """Add a batch: features [n, ...] (flattened), labels [n], network logits [n, C]."""
        h = features.flatten(1).to(self.centred.device, torch.float64) - self.centre
        scores = self.offsets - 2.0 * h @ self.centred.T
        if not bool(torch.isfinite(scores).all()):  # NaN would pass argmin silently
            raise ValueError("features contain NaN or inf values")
        nearest = scores.argmin(1)
        self.totals[0] += h.shape[0]
        self.totals[1] += (nearest == labels.to(nearest.device)).sum()
        self.totals[2] += (nearest == logits.argmax(1).to(nearest.device)).sum()

    def compute(self) -> dict[str, float]:
        """The rates as plain floats."""
        n, correct, match = self.totals.tolist()
        return {"ncc_accuracy": correct / n, "ncc_match": match / n}


def describe_absent(split: str, view: str, classes: Sequence[int]) -> str:
    """The reason text of a missing-class record."""
    shown = ", ".join(map(str, classes[:10])) + (", ..." if len(classes) > 10 else "")
    grouping = " (the targeted view groups by target label)" if view == "targeted" else ""
    return (
        f"class(es) {shown} have no sample in the {split} split{grouping}: these metrics need "
        "every class"
    )
