"""Input checks shared by the attacks, run before any forward pass so bad calls fail fast.

The value checks (inputs within their bounds, labels non-negative) cost one reduction per tensor
and a single host synchronisation per call, outside the attack loop.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, TypeAlias

import torch
from torch import Tensor, nn

NORMS: tuple[str, ...] = ("linf", "l2")
# One bound of the input box: a number, or a tensor broadcastable to a sample (per channel).
Bound: TypeAlias = float | Tensor
# The input box every perturbed input is clamped to: (lo, hi), or None for no box.
Bounds: TypeAlias = tuple[float | Tensor, float | Tensor] | None
PIXEL_BOUNDS: tuple[float, float] = (0.0, 1.0)


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
    """Shape and dtype of an input batch: floating, [N, ...] with N >= 1 and >= 1 feature."""
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(
            f"x must be floating-point inputs (pixels in [0,1] by default), got dtype {x.dtype}"
        )
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


def check_bounds(bounds: object, x: Tensor) -> tuple[Bound, Bound] | None:
    """The input box ``(lo, hi)`` as numbers or tensors broadcast to x's sample shape, or None.

    Each bound is a number, or a tensor of one value per channel (``[C]`` for x ``[N, C, ...]``)
    or of x's sample shape; lo < hi everywhere. Tensor bounds move to x's device and dtype.
    """
    if bounds is None:
        return None
    if not isinstance(bounds, tuple | list) or len(bounds) != 2:
        raise ValueError(f"bounds must be a pair (lo, hi) or None, got {bounds!r}")
    box: list[Bound] = []
    for name, bound in zip(("lo", "hi"), bounds, strict=True):
        if isinstance(bound, Tensor):
            box.append(_broadcast_bound(name, bound, x))
        elif isinstance(bound, Real) and not isinstance(bound, bool):
            if math.isnan(float(bound)):
                raise ValueError(f"bounds: {name} must be a number, got {bound!r}")
            box.append(float(bound))
        else:
            raise ValueError(f"bounds: {name} must be a number or a tensor, got {bound!r}")
    lo, hi = box
    gap = torch.as_tensor(hi, dtype=torch.float64) - torch.as_tensor(lo, dtype=torch.float64)
    if not bool((gap > 0).all()):
        raise ValueError(f"bounds: lo must be < hi everywhere, got {_describe_bounds(bounds)}")
    return lo, hi


def _broadcast_bound(name: str, bound: Tensor, x: Tensor) -> Tensor:
    """A tensor bound shaped ``[1, *sample]``-broadcastable: per channel ``[C]`` or per sample."""
    sample = tuple(x.shape[1:])
    if bound.is_complex() or bound.dtype == torch.bool:
        raise ValueError(f"bounds: {name} must hold real numbers, got dtype {bound.dtype}")
    if bound.numel() == 1:
        shaped = bound.reshape(())
    elif tuple(bound.shape) == sample:
        shaped = bound.unsqueeze(0)
    elif bound.ndim == 1 and len(sample) >= 1 and bound.shape[0] == sample[0]:
        shaped = bound.reshape(1, -1, *([1] * (len(sample) - 1)))
    elif bound.ndim == len(sample) + 1 and _broadcasts(bound.shape, (1, *sample)):
        shaped = bound  # already shaped [1, *sample]-broadcastable (a checked box)
    else:
        raise ValueError(
            f"bounds: {name} has shape {tuple(bound.shape)}; give one value, one per channel "
            f"({sample[0] if sample else 1}) or one per input element {sample}"
        )
    if bool(torch.isnan(shaped).any()):
        raise ValueError(f"bounds: {name} must not be NaN")
    return shaped.to(device=x.device, dtype=x.dtype)


def _broadcasts(shape: tuple[int, ...] | torch.Size, target: tuple[int, ...]) -> bool:
    return all(side in (1, want) for side, want in zip(shape, target, strict=True))


def _describe_bounds(bounds: object) -> str:
    """``[0,1]`` for the default box, else the pair as given (short)."""
    if not isinstance(bounds, tuple | list) or len(bounds) != 2:
        return "no bounds"
    lo: Any = bounds[0]
    hi: Any = bounds[1]
    if isinstance(lo, Tensor) or isinstance(hi, Tensor):
        return "the per-channel bounds given"
    if (float(lo), float(hi)) == PIXEL_BOUNDS:
        return "[0,1]"
    return f"[{float(lo):g},{float(hi):g}]"


def input_range(bounds: tuple[Bound, Bound] | None) -> float:
    """The widest extent hi − lo of the box (inf without bounds): an eps beyond it is a typo."""
    if bounds is None:
        return math.inf
    lo, hi = bounds
    gap = torch.as_tensor(hi, dtype=torch.float64) - torch.as_tensor(lo, dtype=torch.float64)
    return float(gap.max())


def check_eps_range(
    norm: str, eps: float, bounds: tuple[Bound, Bound] | None, x: Tensor, name: str = "eps"
) -> None:
    """Refuse a radius larger than the whole input box: l_inf beyond hi − lo, l_2 beyond the
    box's diagonal. Such an eps is almost always a 0–255 value given for [0,1] pixels."""
    extent = input_range(bounds)
    limit = extent if norm == "linf" else extent * math.sqrt(max(1, math.prod(x.shape[1:])))
    if eps > limit:
        hint = f" (for pixel levels write {eps:g}/255)" if bounds is not None else ""
        raise ValueError(
            f"{name}={eps:g} is larger than the whole input range for {norm} "
            f"({limit:g} for bounds {_describe_bounds(bounds)}): {name} is in the inputs' own "
            f"units{hint}"
        )


def check_model_dtype(model: nn.Module, x: Tensor) -> None:
    """x must have the dtype of the model's floating parameters (outside autocast): a float64
    batch fed to a float32 model fails deep inside the first layer otherwise."""
    if torch.is_autocast_enabled(x.device.type):
        return
    for parameter in model.parameters():
        if parameter.is_floating_point():
            if parameter.dtype != x.dtype:
                raise ValueError(
                    f"x is {x.dtype} but the model's parameters are {parameter.dtype}: convert "
                    f"one to the other (e.g. x.to({parameter.dtype}) or model.to({x.dtype}))"
                )
            return


def check_values(
    x: Tensor,
    *labels: tuple[str, Tensor],
    bounds: tuple[Bound, Bound] | None = PIXEL_BOUNDS,
) -> dict[str, int]:
    """Check x is finite and inside ``bounds`` and labels are >= 0 with one host sync; return
    each label's maximum. ``bounds`` is the output of :func:`check_bounds`."""
    detached = x.detach()
    x_range = torch.stack(torch.aminmax(detached)).double()
    if bounds is not None and (isinstance(bounds[0], Tensor) or isinstance(bounds[1], Tensor)):
        lo, hi = bounds  # per-element bounds: one elementwise comparison (also false for NaN)
        inside = ((detached >= lo) & (detached <= hi)).all().double().reshape(1)
    else:
        inside = torch.ones(1, dtype=torch.float64, device=x.device)
    stats = [x_range, inside]
    stats += [torch.stack(torch.aminmax(t)).double() for _, t in labels]
    values = torch.cat(stats).tolist()  # the call's single host synchronisation
    x_min, x_max, ok = values[0], values[1], values[2] == 1.0
    if bounds is None:
        ok = math.isfinite(x_min) and math.isfinite(x_max)  # NaN and inf propagate to min/max
    elif ok:
        lo, hi = bounds
        low = x_min if isinstance(lo, Tensor) else lo
        high = x_max if isinstance(hi, Tensor) else hi
        ok = x_min >= low and x_max <= high  # also false for NaN
    if not ok:
        if bounds is None:
            raise ValueError(f"x must be finite, got values in [{x_min:g}, {x_max:g}]")
        raise ValueError(
            f"x must lie in {_describe_bounds(bounds)} (the bounds), got values in "
            f"[{x_min:g}, {x_max:g}]; pass bounds=(lo, hi), or bounds=None for unbounded inputs"
        )
    maxima: dict[str, int] = {}
    for i, (name, _) in enumerate(labels):
        low, high = values[3 + 2 * i], values[4 + 2 * i]
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
