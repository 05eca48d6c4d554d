"""The feasible set of an attack: the l_inf or l_2 eps-ball around x0 intersected with the input
box [lo, hi] (default [0,1]^d; per-channel bounds or no box at all are settings).

One object per attack call holds x0 and whatever can be precomputed, so the loop body is a
handful of fused tensor ops with no host synchronisation. Every tensor keeps x0's dtype and
memory format (channels_last stays channels_last).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ncrobust.attacks.validation import PIXEL_BOUNDS, Bound, check_norm

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

    def __init__(
        self,
        x0: Tensor,
        norm: str,
        eps: float,
        bounds: tuple[Bound, Bound] | None = PIXEL_BOUNDS,
    ) -> None:
        self.x0 = x0.detach()
        self.norm = check_norm(norm)
        self.eps = float(eps)
        self.box = bounds  # numbers or tensors broadcastable to x0 (see check_bounds), or None
        if self.norm == "linf":
            # The l_inf ball and the input box are both boxes, so projecting onto the ball and
            # then clamping to the box is one clamp to their intersection [lo, hi].
            self.lo = self.clamp(self.x0 - self.eps, upper=False)
            self.hi = self.clamp(self.x0 + self.eps, lower=False)

    def clamp(self, t: Tensor, *, lower: bool = True, upper: bool = True) -> Tensor:
        """t clamped in place to the input box (only its lower or upper side when asked)."""
        if self.box is None:
            return t
        lo, hi = self.box
        lo_, hi_ = (lo if lower else None), (hi if upper else None)
        if isinstance(lo_, Tensor) or isinstance(hi_, Tensor):
            if lo_ is not None:
                t = torch.maximum(t, torch.as_tensor(lo_, dtype=t.dtype, device=t.device), out=t)
            if hi_ is not None:
                t = torch.minimum(t, torch.as_tensor(hi_, dtype=t.dtype, device=t.device), out=t)
            return t
        return t.clamp_(min=lo_, max=hi_)

    def random_start(self, generator: torch.Generator | None = None) -> Tensor:
        """A random point of the ball, drawn as the released code and torchattacks do, in the box.

        l_inf: x0 + U(-eps, eps) per pixel. l_2: x0 + eps·r·z/‖z‖ with z ~ N(0, I) and one
        r ~ U(0,1) per sample (a random radius, not uniform in volume).
        """
        delta = random_offsets(torch.empty_like(self.x0), self.norm, self.eps, generator)
        return self.clamp(self.x0 + delta)

    def step(self, x: Tensor, grad: Tensor, alpha: float) -> Tensor:
        """Move x by alpha along the norm's steepest-ascent direction of grad, then project.

        A negative alpha descends (targeted attacks). l_inf: x + alpha·sign(grad). l_2:
        x + alpha·grad/(‖grad‖ + 1e-10) per sample, then shrink x − x0 to norm <= eps and clamp
        to the box. ``grad`` is consumed (may be overwritten).
        """
        if self.norm == "linf":
            return torch.add(x, grad.sign_(), alpha=alpha).clamp_(self.lo, self.hi)
        scale = alpha / (sample_norms(grad) + GRAD_NORM_EPS)
        delta = torch.addcmul(x, grad, scale).sub_(self.x0)
        return self.project_l2(delta)

    def project_l2(self, delta: Tensor) -> Tensor:
        """x0 + delta with delta scaled by min(1, eps/‖delta‖) per sample, clamped to the box."""
        norms = sample_norms(delta).clamp_(min=torch.finfo(delta.dtype).tiny)
        factor = (self.eps / norms).clamp_(max=1.0)
        return self.clamp(torch.addcmul(self.x0, delta, factor))
