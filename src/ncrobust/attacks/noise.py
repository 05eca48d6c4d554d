"""Random (non-adversarial) perturbations: the paper's Gaussian-noise baseline."""

from __future__ import annotations

import torch
from torch import Tensor

from ncrobust.attacks.validation import (
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
    noise: Tensor | None = None,
) -> Tensor:
    """clamp(x + std·N(0, I), 0, 1) for pixels ``x`` in [0,1], one draw per pixel.

    The paper's baseline uses std = 8/255. Draws come from ``generator`` (on x's device) or
    the global RNG, or are ``noise`` (N(0, I) draws of x's shape, e.g. rows of a larger draw).
    Returns a detached tensor with x's shape, dtype and layout.
    """
    std = check_nonnegative("std", std)
    check_images(x)
    check_generator(generator, x)
    check_values(x)
    if noise is None:
        noise = torch.empty_like(x, requires_grad=False).normal_(generator=generator)
    elif noise.shape != x.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, x has {tuple(x.shape)}")
    return torch.add(x.detach(), noise, alpha=std).clamp_(0.0, 1.0)
