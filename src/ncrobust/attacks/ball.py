"""The feasible set of an attack: the l_inf or l_2 eps-ball around x0 intersected with [0,1]^d.

One object per attack call holds x0 and whatever can be precomputed, so the loop body is a
handful of fused tensor ops with no host synchronisation. Every tensor keeps x0's dtype and
memory format (channels_last stays channels_last).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ncrobust.attacks.validation import check_norm

# Added to per-sample gradient norms before dividing (same constant as the released code and
# torchattacks), so a zero gradient gives a zero step instead of NaN.
GRAD_NORM_EPS = 1e-10


def sample_norms(t: Tensor) -> Tensor:
    """Per-sample l_2 norms of a batch [N, ...], shaped [N, 1, ..., 1] for broadcasting."""
    return torch.linalg.vector_norm(t, dim=tuple(range(1, t.ndim)), keepdim=True)


def random_offsets(
    out: Tensor, norm: str, eps: float, generator: torch.Generator | None = None
) -> Tensor:
    """Fill ``out`` (a batch [N, ...]) with the random start's offsets from x0 and return it.

    :meth:`Ball.random_start` is x0 plus these, clamped to [0,1]. Drawing them for a larger
    batch and taking rows gives each part of a batch split over processes the draws one
    process would have made for the whole batch.
    """
    if check_norm(norm) == "linf":
        return out.uniform_(-eps, eps, generator=generator)
    out.normal_(generator=generator)
    z_norm = sample_norms(out)
    radius = torch.empty_like(z_norm).uniform_(0.0, 1.0, generator=generator)
    return out.mul_(radius / z_norm * eps)


class Ball:
    """Random starts, steepest-ascent steps and projections for one batch x0 and radius eps."""

    def __init__(self, x0: Tensor, norm: str, eps: float) -> None:
        self.x0 = x0.detach()
        self.norm = check_norm(norm)
        self.eps = float(eps)
        if self.norm == "linf":
            # The l_inf ball and the pixel box are both boxes, so projecting onto the ball and
            # then clamping to [0,1] is one clamp to their intersection [lo, hi].
            self.lo = (self.x0 - self.eps).clamp_(min=0.0)
            self.hi = (self.x0 + self.eps).clamp_(max=1.0)

    def random_start(self, generator: torch.Generator | None = None) -> Tensor:
        """A random point of the ball, drawn as the released code and torchattacks do, in [0,1].

        l_inf: x0 + U(-eps, eps) per pixel. l_2: x0 + eps·r·z/‖z‖ with z ~ N(0, I) and one
        r ~ U(0,1) per sample (a random radius, not uniform in volume).
        """
        delta = random_offsets(torch.empty_like(self.x0), self.norm, self.eps, generator)
        return (self.x0 + delta).clamp_(0.0, 1.0)

    def step(self, x: Tensor, grad: Tensor, alpha: float) -> Tensor:
        """Move x by alpha along the norm's steepest-ascent direction of grad, then project.

        A negative alpha descends (targeted attacks). l_inf: x + alpha·sign(grad). l_2:
        x + alpha·grad/(‖grad‖ + 1e-10) per sample, then shrink x − x0 to norm <= eps and clamp
        to [0,1]. ``grad`` is consumed (may be overwritten).
        """
        if self.norm == "linf":
            return torch.add(x, grad.sign_(), alpha=alpha).clamp_(self.lo, self.hi)
        scale = alpha / (sample_norms(grad) + GRAD_NORM_EPS)
        delta = torch.addcmul(x, grad, scale).sub_(self.x0)
        return self.project_l2(delta)

    def project_l2(self, delta: Tensor) -> Tensor:
        """x0 + delta with delta scaled by min(1, eps/‖delta‖) per sample, clamped to [0,1]."""
        norms = sample_norms(delta).clamp_(min=torch.finfo(delta.dtype).tiny)
        factor = (self.eps / norms).clamp_(max=1.0)
        return torch.addcmul(self.x0, delta, factor).clamp_(0.0, 1.0)
