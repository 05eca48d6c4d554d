"""Projected gradient descent (Madry et al.) for l_inf and l_2 threat models, (un)targeted."""

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
    check_labels,
    check_logits,
    check_model_dtype,
    check_norm,
    check_values,
)


def target_labels(y: Tensor, num_classes: int) -> Tensor:
    """The class-balanced target of the paper's targeted attack: (y + 1) mod C."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(y, Tensor) or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError("y must be a tensor of integer class indices")
    if y.numel() and not bool(((y >= 0) & (y < num_classes)).all()):
        raise ValueError(f"y must be class indices in [0, {num_classes})")
    return (y + 1) % num_classes


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: str = "linf",
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    targeted: bool = False,
    target: Tensor | None = None,
    generator: torch.Generator | None = None,
    bounds: Bounds = PIXEL_BOUNDS,
    start: Tensor | None = None,
) -> Tensor:
    """PGD adversarial examples for inputs ``x`` in ``bounds``: ``steps`` steps of size ``alpha``.

    Untargeted: ascend the cross-entropy to ``y``. Targeted: descend the cross-entropy to
    ``target`` (default ``target_labels(y, C)``, C = the logits' width). l_inf steps along
    sign(grad); l_2 along grad/(‖grad‖ + 1e-10) per sample; after every step the perturbation
    is projected onto the ball (l_2: scaled by min(1, eps/‖delta‖), as torchattacks; the
    released code's ``renorm`` divides by ‖delta‖ + 1e-7 instead) and the input clamped to
    ``bounds``. The random start is U(-eps, eps) per pixel (l_inf) or a Gaussian direction of
    length U(0,1)·eps per sample (l_2), clamped likewise; its draws come from ``generator`` (on
    x's device) or the global RNG. ``start`` replaces it by a given first iterate, clamped to
    ``bounds`` here (e.g. x plus this batch's rows of offsets drawn for a larger batch).

    ``bounds`` is the input box ``(lo, hi)``: numbers, or tensors with one value per channel
    (``[C]``) or per input element; ``None`` leaves the inputs unbounded. The default is [0,1]
    pixels. eps and alpha are in the inputs' own units; an eps larger than the whole box (l_inf:
    hi − lo; l_2: its diagonal), such as ``eps=8`` meant as 8/255, is refused. ``x`` must have
    the dtype of the model's parameters (outside autocast).

    The loss is the *summed* cross-entropy: each sample's step is then independent of the batch
    size (the l_2 1e-10 guard acts on the sample's own gradient scale) and gradients do not
    shrink by 1/N under reduced precision; sign and normalised steps are otherwise invariant to
    the scale, so this matches the mean-reduced loss of torchattacks and the released code.

    ``alpha`` must be > 0; ``eps = 0`` is allowed and returns x. Gradients are taken with
    ``torch.autograd.grad`` w.r.t. the input only, so no parameter ``.grad`` is touched. The
    model's train/eval mode is the caller's choice (BN statistics update in train mode). Works
    under the caller's autocast and with channels_last inputs; the update is computed in x's
    dtype. Labels >= C are detected after the first forward pass (C is the logits' width),
    before any gradient is taken. Returns a detached tensor with x's shape, dtype and layout.
    """
    check_norm(norm)
    eps, alpha, steps = check_budget(eps, alpha, steps)
    if target is not None and not targeted:
        raise ValueError("target was given but targeted=False; pass targeted=True to use it")
    check_images(x)
    box = check_bounds(bounds, x)
    check_eps_range(norm, eps, box, x)
    check_model_dtype(model, x)
    check_labels("y", y, x)
    labels: list[tuple[str, Tensor]] = [("y", y)]
    if target is not None:
        check_labels("target", target, x)
        labels.append(("target", target))
    check_generator(generator, x)
    label_max = check_values(x, *labels, bounds=box)

    ball = Ball(x, norm, eps, box)
    if start is not None:
        if start.shape != x.shape:
            raise ValueError(f"start has shape {tuple(start.shape)}, x has {tuple(x.shape)}")
        x_adv = ball.clamp(start.detach().to(x.dtype, copy=True))
    else:
        x_adv = ball.random_start(generator) if random_start else ball.x0.clone()
    step = -alpha if targeted else alpha  # targeted: descend the loss to the target
    goal = (target if target is not None else y).long()  # the labels the loss is taken to
    with torch.enable_grad():
        for i in range(steps):
            x_adv.requires_grad_(True)
            logits = model(x_adv)
            if i == 0:  # shape-only checks on the first output: no host sync
                num_classes = check_logits(logits, x.shape[0], label_max)
                if targeted and target is None:
                    goal = (goal + 1) % num_classes  # target_labels without its checks
            loss = F.cross_entropy(logits, goal, reduction="sum")
            (grad,) = torch.autograd.grad(loss, [x_adv])
            x_adv = ball.step(x_adv.detach(), grad, step)
    return x_adv.detach()
