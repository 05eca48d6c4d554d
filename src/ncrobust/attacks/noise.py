"""Random (non-adversarial) perturbations: the paper's Gaussian-noise baseline."""

from __future__ import annotations

import torch
from torch import Tensor

from ncrobust.attacks.ball import Ball
from ncrobust.attacks.validation import (
    PIXEL_BOUNDS,
    Bounds,
    check_bounds,
    check_generator,
    check_images,
    check_nonnegative,
    check_values,
)


def gaussian(
    x: Tensor,
    std: float,
    *,
    generator: torch.Generator | None = None,
    bounds: Bounds = PIXEL_BOUNDS,
    noise: Tensor | None = None,
) -> Tensor:
    """x + std·N(0, I) clamped to ``bounds`` (default [0,1] pixels), one draw per element.

    The paper's baseline uses std = 8/255 (in the inputs' units). ``bounds`` is as in
    :func:`~ncrobust.attacks.pgd` (per-channel tensors allowed; None: no clamp). Draws come from
    ``generator`` (on x's device) or the global RNG, or are ``noise`` (N(0, I) draws of x's
    shape, e.g. rows of a larger draw). Returns a detached tensor with x's shape, dtype and
    layout.
    """
    std = check_nonnegative("std", std)
    check_images(x)
    box = check_bounds(bounds, x)
    check_generator(generator, x)
    check_values(x, bounds=box)
    if noise is None:
        noise = torch.empty_like(x, requires_grad=False).normal_(generator=generator)
    elif noise.shape != x.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, x has {tuple(x.shape)}")
    return Ball(x, "l2", std, box).clamp(torch.add(x.detach(), noise, alpha=std))
