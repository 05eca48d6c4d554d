"""The logit margin and PGD on it: a loss that does not saturate as the cross-entropy does."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ncrobust.attacks.ball import Ball
from ncrobust.attacks.validation import Bounds, check_bounds


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """Per row, the largest other logit minus the true class's: > 0 exactly when misclassified.

    Its gradient vanishes only where the logits are flat in the input, unlike the
    cross-entropy's, which underflows to zero on very confident points.
    """
    rows = y.long()[:, None]
    others = logits.scatter(1, rows, float("-inf")).amax(1)
    return others - logits.gather(1, rows)[:, 0]


def margin_pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    eps: float,
    alpha: float,
    steps: int,
    bounds: Bounds,
    start: Tensor,
    targeted: bool = False,
) -> Tensor:
    """PGD (as :func:`ncrobust.attacks.pgd`: same steps, projection and bounds) ascending the
    margin max_{c≠y} z_c − z_y of ``model``'s logits z instead of the cross-entropy.

    The margin does not saturate: on squared-distance logits (a nearest-class-mean rule, the
    ``ncc_adaptive`` view) the cross-entropy's gradient vanishes on confidently classified
    points, or averages over all classes, depending on the features' scale; sign and
    normalised steps of the margin are the same at any scale. Gradients are taken w.r.t. the
    input only.
    """
    if targeted:
        raise ValueError("margin_pgd is untargeted")
    ball = Ball(x, norm, eps, check_bounds(bounds, x))
    x_adv = ball.clamp(start.detach().to(x.dtype, copy=True))
    with torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(margin(model(x_adv).float(), y).sum(), [x_adv])
            x_adv = ball.step(x_adv.detach(), grad, alpha)
    return x_adv.detach()
