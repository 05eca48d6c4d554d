"""The per-class statistics of the paper's Figure 7 for a perturbed data set: how many samples
are predicted as each class, and how the mean feature of those samples compares with the clean
class mean (norms and angle)."""

from __future__ import annotations

import torch
from torch import Tensor

from ncrobust.collapse import geometry
from ncrobust.collapse._checks import (
    as_feature_matrix,
    as_labels,
    as_matrix,
    check_num_classes,
    check_width,
)
from ncrobust.collapse._sums import ClassSums, sync_requested
from ncrobust.runtime import resolve_device


class AttackStatistics:
    """Streams perturbed features grouped by the network's predicted label.

    ``compute()`` returns per-class lists: ``counts`` (samples predicted as c),
    ``clean_mean_norm`` (‖μ_c‖ of the clean means), ``predicted_mean_norm`` (‖μ′_c‖, the mean of
    the perturbed features predicted as c) and ``angle`` (radians between μ_c and μ′_c); NaN for
    a class never predicted. The means are not centred unless ``clean_global_mean`` is given:
    then the clean means are centred by it and the predicted means by the perturbed data's own
    global mean. Sums all-reduce under torch.distributed like :class:`CollapseAccumulator`.
    """

    def __init__(
        self,
        num_classes: int,
        clean_means: Tensor,
        *,
        clean_global_mean: Tensor | None = None,
        device: torch.device | str | None = None,
        sync: bool | None = None,
    ) -> None:
        self.num_classes = check_num_classes(num_classes)
        means = as_matrix(clean_means, (num_classes, None), "clean_means", "num_classes × features")
        self._num_features = means.shape[1]
        self._clean_global_mean = None
        if clean_global_mean is not None:
            self._clean_global_mean = as_matrix(
                clean_global_mean, (self._num_features,), "clean_global_mean", "features"
            )
        self._device = resolve_device(str(device)) if device is not None else means.device
        self._clean_means = means.to(self._device)
        if self._clean_global_mean is not None:
            self._clean_global_mean = self._clean_global_mean.to(self._device)
        self._sync = sync
        self._sums = ClassSums(self.num_classes, self._num_features, self._device)
        self._result: dict[str, list[float]] | None = None

    def update(self, features: Tensor, predictions: Tensor) -> None:
        """Add perturbed features (n, ...) with the network's predicted labels (n,)."""
        if self._result is not None:
            raise ValueError("update() after compute(): this accumulator is finished")
        h = as_feature_matrix(features)
        check_width(h.shape[1], self._num_features, "features", "clean_means has")
        y = as_labels(predictions, h.shape[0], self.num_classes, name="predictions")
        counts, sums = self._sums.batch(h.to(self._device), y.to(self._device))
        if not bool(torch.isfinite(sums).all()):
            raise ValueError("features contain NaN or inf values")
        self._sums.add(counts, sums)

    def merge(self, other: AttackStatistics) -> None:
        """Add the counts and sums of ``other`` (same classes and clean means)."""
        if not isinstance(other, AttackStatistics):
            raise TypeError(f"can only merge AttackStatistics, got {type(other).__name__}")
        if other is self:
            raise ValueError("cannot merge statistics with themselves")
        if self._result is not None or other._result is not None:
            raise ValueError("cannot merge statistics after compute()")
        if other.num_classes != self.num_classes or not torch.equal(
            other._clean_means.to(self._device), self._clean_means
        ):
            raise ValueError("cannot merge statistics with different classes or clean means")
        self._sums.add(other._sums.counts, other._sums.sums)

    def compute(self) -> dict[str, list[float]]:
        """Per-class ``counts``, ``clean_mean_norm``, ``predicted_mean_norm``, ``angle``."""
        if self._result is None:
            if sync_requested(self._sync):
                self._sums.all_reduce()
            clean, predicted = self._clean_means, self._sums.means()
            if self._clean_global_mean is not None:
                total = self._sums.counts.sum().to(torch.float64)
                clean = clean - self._clean_global_mean
                predicted = predicted - self._sums.sums.sum(dim=0) / total
            rows = torch.stack(
                [
                    self._sums.counts.to(torch.float64),
                    clean.norm(dim=1),
                    predicted.norm(dim=1),
                    geometry.angles(clean, predicted),
                ]
            ).tolist()
            names = ("counts", "clean_mean_norm", "predicted_mean_norm", "angle")
            self._result = dict(zip(names, rows, strict=True))
            self._result["counts"] = [int(c) for c in self._result["counts"]]
        return {name: list(values) for name, values in self._result.items()}
