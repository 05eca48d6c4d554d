"""In-memory entry points (tensors in, plain floats out) built on the streaming accumulator, so
the metrics have one implementation."""

from __future__ import annotations

from typing import Literal, overload

import pandas as pd
from torch import Tensor

from ncrobust.collapse.accumulator import CollapseAccumulator


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Class means μ_c (C×p, float64) of ``features`` (n, ...) flattened per sample."""
    accumulator = CollapseAccumulator(num_classes, sync=False)
    accumulator.update(features, labels)
    accumulator.next_pass()
    return accumulator.means()


@overload
def collapse_metrics(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    weight: Tensor | None = ...,
    bias: Tensor | None = ...,
    reference_means: Tensor | None = ...,
    logits: Tensor | None = ...,
    *,
    reference_global_mean: Tensor | None = ...,
    per_class: Literal[False] = ...,
) -> dict[str, float]: ...


@overload
def collapse_metrics(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    weight: Tensor | None = ...,
    bias: Tensor | None = ...,
    reference_means: Tensor | None = ...,
    logits: Tensor | None = ...,
    *,
    reference_global_mean: Tensor | None = ...,
    per_class: Literal[True],
) -> tuple[dict[str, float], pd.DataFrame]: ...


def collapse_metrics(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    reference_means: Tensor | None = None,
    logits: Tensor | None = None,
    *,
    reference_global_mean: Tensor | None = None,
    per_class: bool = False,
) -> dict[str, float] | tuple[dict[str, float], pd.DataFrame]:
    """Neural Collapse metrics of one data set held in memory (this process's data only).

    Keys: ``nc1``, ``nc1_trace_ratio``, ``cdnv``, ``nc2_equinorm``, ``nc2_equinorm_std``,
    ``nc2_equiangular``, ``etf_error``, ``gnc2``, ``between_class_angle`` always;
    ``nc2_equinorm_w``, ``nc2_equiangular_w``, ``nc3``,
    ``nc3_frobenius``, ``unc3`` with ``weight``; ``nc4`` with ``weight`` or ``logits`` (the
    network's prediction is argmax(logits) when given, else argmax(W h + b)); ``ncc_accuracy``,
    ``simplex_similarity``, ``angular_distance`` with ``reference_means``, and ``ncc_match``
    when a prediction is available too; ``missing_classes`` (their number) when some class has
    no sample, the metrics then being taken over the classes present. ``per_class=True``
    returns ``(metrics, table)`` with the tidy per-class table of
    :meth:`CollapseAccumulator.per_class`. See :class:`CollapseAccumulator`.
    """
    accumulator = CollapseAccumulator(
        num_classes,
        weight=weight,
        bias=bias,
        reference_means=reference_means,
        reference_global_mean=reference_global_mean,
        sync=False,
    )
    accumulator.update(features, labels, logits)
    accumulator.next_pass()
    accumulator.update(features, labels, logits)
    values = accumulator.compute()
    if per_class:
        return values, accumulator.per_class()
    return values
