"""Input validation shared by the collapse accumulators: every check raises a ValueError naming
the problem before any state changes."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_num_classes(num_classes: object) -> int:
    """``num_classes`` as an int, refusing non-integers and fewer than two classes."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise ValueError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (got {num_classes})")
    return num_classes


def as_feature_matrix(features: object, name: str = "features") -> Tensor:
    """A real floating tensor of shape (n, ...) viewed as (n, p): each sample flattened."""
    if not isinstance(features, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if not features.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {features.dtype}")
    if features.dim() == 0:
        raise ValueError(f"{name} must have a leading sample dimension, got a scalar")
    return features.reshape(features.shape[0], math.prod(features.shape[1:]))


def as_labels(labels: object, n: int, num_classes: int, name: str = "labels") -> Tensor:
    """Integer class indices of length ``n`` in [0, num_classes), as int64."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(labels.shape)}")
    if labels.shape[0] != n:
        raise ValueError(f"features and {name} have different lengths ({n} vs {labels.shape[0]})")
    labels = labels.long()
    if n and bool(((labels < 0) | (labels >= num_classes)).any()):
        bad = labels[(labels < 0) | (labels >= num_classes)][0].item()
        raise ValueError(f"{name} must lie in [0, {num_classes}); found {bad}")
    return labels


def as_logits(logits: object, n: int, num_classes: int) -> Tensor:
    """Network outputs of shape (n, num_classes)."""
    if not isinstance(logits, Tensor):
        raise ValueError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if tuple(logits.shape) != (n, num_classes):
        raise ValueError(
            f"logits must have shape ({n}, {num_classes}) (samples × classes); "
            f"got {tuple(logits.shape)}"
        )
    return logits


def as_matrix(value: object, shape: tuple[int | None, ...], name: str, meaning: str) -> Tensor:
    """A finite floating tensor of the given shape (``None`` matches any size) as float64."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    actual = tuple(value.shape)
    if len(actual) != len(shape) or any(
        s is not None and s != a for s, a in zip(shape, actual, strict=True)
    ):
        wanted = ", ".join("p" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must have shape ({wanted}) ({meaning}); got {actual}")
    if not value.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    value = value.detach().to(torch.float64)
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    return value


def check_width(p: int, expected: int | None, name: str, source: str) -> None:
    """Refuse a feature width ``p`` that differs from the width ``expected`` fixed by ``source``."""
    if expected is not None and p != expected:
        raise ValueError(f"{name} have {p} values per sample but {source} {expected}")


def empty_class_message(counts: Tensor, needs: str) -> str | None:
    """A message naming the classes with no sample, or None when every class has one."""
    empty = (counts == 0).nonzero().flatten().tolist()
    if not empty:
        return None
    shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
    noun = "class" if len(empty) == 1 else "classes"
    return f"{noun} {shown} {'has' if len(empty) == 1 else 'have'} no sample: {needs}"
