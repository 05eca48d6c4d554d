"""The inner maximisation of TRADES (Zhang et al. 2019): x_adv maximising KL(f(x) ‖ f(x_adv))."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncrobust.attacks.ball import Ball
from ncrobust.attacks.validation import (
    PIXEL_BOUNDS,
    Bounds,
    check_bounds,
    check_budget,
    check_eps_range,
    check_generator,
    check_images,
    check_logits,
    check_model_dtype,
    check_norm,
    check_values,
)

# Scale of the Gaussian start around x: the KL's gradient vanishes at x_adv = x.
TRADES_START_STD = 1e-3


def trades_perturb(
    model: nn.Module,
    x: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: str = "linf",
    generator: torch.Generator | None = None,
    bounds: Bounds = PIXEL_BOUNDS,
    start: Tensor | None = None,
) -> Tensor:
    """x_adv in the eps-ball around inputs ``x`` maximising KL(softmax(f(x)) ‖ softmax(f(x_adv))).

    As the original TRADES and the released code: start at x + 0.001·N(0, I) (not clamped;
    drawn from ``generator`` or the global RNG), compute softmax(f(x)) once without gradient,
    and ascend the summed KL for ``steps`` steps. l_inf: x_adv + alpha·sign(grad), projected
    onto the ball and clamped to ``bounds`` (default [0,1]; see :func:`pgd`; identical to the
    reference). l_2: a normalised-gradient
    step alpha·grad/(‖grad‖ + 1e-10) with the same projection and clamp as :func:`pgd`; this
    differs from the original TRADES, which runs SGD on delta with lr = 2·eps/steps, replaces a
    zero gradient by noise and projects with ``renorm`` after clamping. ``start`` replaces the
    noisy start by a given first iterate (e.g. rows of one drawn for a larger batch).

    The caller chooses train/eval mode (the released code runs it in eval mode); only input
    gradients are taken, no parameter ``.grad`` is touched. Returns a detached tensor with
    x's shape, dtype and layout.
    """
    check_norm(norm)
    eps, alpha, steps = check_budget(eps, alpha, steps)
    check_images(x)
    box = check_bounds(bounds, x)
    check_eps_range(norm, eps, box, x)
    check_model_dtype(model, x)
    check_generator(generator, x)
    check_values(x, bounds=box)

    ball = Ball(x, norm, eps, box)
    with torch.no_grad():
        logits_clean = model(ball.x0)
        check_logits(logits_clean, x.shape[0], {})
        p_clean = F.softmax(logits_clean, dim=1)
    if start is not None:
        if start.shape != x.shape:
            raise ValueError(f"start has shape {tuple(start.shape)}, x has {tuple(x.shape)}")
        x_adv = start.detach().to(x.dtype)
    else:
        noise = torch.empty_like(ball.x0).normal_(generator=generator)
        x_adv = torch.add(ball.x0, noise, alpha=TRADES_START_STD)
    with torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            log_p_adv = F.log_softmax(model(x_adv), dim=1)
            loss = F.kl_div(log_p_adv, p_clean, reduction="sum")
            (grad,) = torch.autograd.grad(loss, [x_adv])
            x_adv = ball.step(x_adv.detach(), grad, alpha)
    return x_adv.detach()
