"""Input checks shared by the attacks, run before any forward pass so bad calls fail fast.

The value checks (pixels in [0,1], labels non-negative) cost one reduction per tensor and a
single host synchronisation per call, outside the attack loop.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import Tensor

NORMS: tuple[str, ...] = ("linf", "l2")


def check_norm(norm: object) -> str:
    """Return ``norm`` if it names a supported threat model, else raise ValueError."""
    if not isinstance(norm, str) or norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: expected one of {', '.join(NORMS)}")
    return norm


def check_nonnegative(name: str, value: object) -> float:
    """A finite real number >= 0 (an eps or a noise scale), returned as float."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return number


def check_budget(eps: object, alpha: object, steps: object) -> tuple[float, float, int]:
    """Validate an iterative attack's radius, step size (> 0) and step count (>= 1)."""
    eps_f = check_nonnegative("eps", eps)
    alpha_f = check_nonnegative("alpha", alpha)
    if alpha_f == 0:
        raise ValueError("alpha must be > 0 (a zero step never moves; use eps=0 for no attack)")
    if isinstance(steps, bool) or not isinstance(steps, Integral):
        raise ValueError(f"steps must be an integer, got {steps!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return eps_f, alpha_f, int(steps)


def check_generator(generator: torch.Generator | None, x: Tensor) -> None:
    """The generator, when given, must live on x's device type (torch draws on its device)."""
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(
            f"generator is on {generator.device} but x is on {x.device}; "
            "create the generator on x's device"
        )


def check_images(x: Tensor) -> None:
    """Shape and dtype of a pixel batch: floating, [N, ...] with N >= 1 and >= 1 feature."""
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating-point pixels in [0,1], got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"x must be a batch [N, ...] (>= 2 dims), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")


def check_labels(name: str, labels: Tensor, x: Tensor) -> None:
    """Shape, dtype and device of a label vector matching the batch of x."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if labels.shape != (x.shape[0],):
        raise ValueError(
            f"{name} must have shape ({x.shape[0]},) to match x's batch, got {tuple(labels.shape)}"
        )
    if labels.device != x.device:
        raise ValueError(f"{name} is on {labels.device} but x is on {x.device}")


def check_values(x: Tensor, *labels: tuple[str, Tensor]) -> dict[str, int]:
    """Check pixels lie in [0,1] and labels are >= 0 with one host sync; return each label max."""
    stats = [torch.stack(torch.aminmax(x.detach())).double()]
    stats += [torch.stack(torch.aminmax(t)).double() for _, t in labels]
    values = torch.cat(stats).tolist()  # the call's single host synchronisation
    x_min, x_max = values[0], values[1]
    if not (x_min >= 0.0 and x_max <= 1.0):  # also false for NaN
        raise ValueError(f"x must lie in [0,1] (pixels), got values in [{x_min:g}, {x_max:g}]")
    maxima: dict[str, int] = {}
    for i, (name, _) in enumerate(labels):
        low, high = values[2 + 2 * i], values[3 + 2 * i]
        if low < 0:
            raise ValueError(f"{name} must be class indices >= 0, got minimum {int(low)}")
        maxima[name] = int(high)
    return maxima


def check_logits(logits: Tensor, batch: int, label_max: dict[str, int]) -> int:
    """The model's first output must be [N, C] logits with every label < C; returns C."""
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model(x) must return logits of shape [{batch}, C], got {shape}")
    num_classes = int(logits.shape[1])
    for name, high in label_max.items():
        if high >= num_classes:
            raise ValueError(
                f"{name} must be class indices < C = {num_classes} (the logits' width), "
                f"got maximum {high}"
            )
    return num_classes
