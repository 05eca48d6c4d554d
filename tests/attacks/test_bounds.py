"""Input bounds as a setting: attacks stay in the box and the ball; 0–255 eps and dtype mismatches
are refused with a package message before any forward pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ncrobust.attacks import gaussian, pgd, trades_perturb

from .conftest import tiny_net


class Counting(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


def _batch(lo: torch.Tensor | float, hi: torch.Tensor | float, n: int = 12) -> torch.Tensor:
    """Inputs filling the box [lo, hi] per channel, some exactly on its faces."""
    g = torch.Generator().manual_seed(3)
    u = (torch.rand(n, 3, 8, 8, generator=g, dtype=torch.float64) * 1.2 - 0.1).clamp(0, 1)
    lo_t = torch.as_tensor(lo, dtype=torch.float64).reshape(1, -1, 1, 1)
    hi_t = torch.as_tensor(hi, dtype=torch.float64).reshape(1, -1, 1, 1)
    return lo_t + u * (hi_t - lo_t)


LO = torch.tensor([-2.0, -1.0, 0.5])
HI = torch.tensor([2.0, 0.0, 3.5])


@pytest.mark.parametrize("norm, eps", [("linf", 0.3), ("l2", 1.5)])
@pytest.mark.parametrize("box", ["scalar", "per_channel"])
def test_pgd_stays_in_the_bounds_and_the_ball(norm: str, eps: float, box: str) -> None:
    model = tiny_net()
    lo, hi = (-3.0, 5.0) if box == "scalar" else (LO, HI)
    x = _batch(lo, hi)
    y = torch.arange(12) % 5
    x_adv = pgd(model, x, y, norm=norm, eps=eps, alpha=eps / 3, steps=4, bounds=(lo, hi))
    lo_t = torch.as_tensor(lo, dtype=x.dtype).reshape(1, -1, 1, 1)
    hi_t = torch.as_tensor(hi, dtype=x.dtype).reshape(1, -1, 1, 1)
    assert bool(((x_adv >= lo_t) & (x_adv <= hi_t)).all())
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps * (1 + 1e-9)).all())
    assert float(size.max()) > eps / 2  # the attack moved: the box did not pin it to x
    # the loss went up (untargeted), so the bounds did not disable the attack
    loss = nn.functional.cross_entropy
    with torch.no_grad():
        assert float(loss(model(x_adv), y)) > float(loss(model(x), y))


def test_the_clamp_acts_at_the_given_bounds_not_at_zero_and_one() -> None:
    """Inputs on the box faces: a [0,1] clamp would move them into [0,1]; the box keeps them."""
    model = tiny_net()
    x = _batch(LO, HI)
    y = torch.arange(12) % 5
    x_adv = pgd(model, x, y, eps=0.5, alpha=0.2, steps=3, bounds=(LO, HI))
    assert float(x_adv.min()) < -1.0 and float(x_adv.max()) > 2.5
    # per channel, the faces are reached exactly when the gradient pushes there
    reached_low = torch.isclose(x_adv, LO.double().reshape(1, 3, 1, 1)).any()
    assert bool(reached_low)


def test_no_bounds_leaves_inputs_unclamped() -> None:
    model = tiny_net()
    x = _batch(-10.0, 10.0)
    y = torch.arange(12) % 5
    x_adv = pgd(model, x, y, eps=0.5, alpha=0.5, steps=1, random_start=False, bounds=None)
    # one l_inf step of alpha = eps moves every pixel with a nonzero gradient by exactly eps
    moved = (x_adv - x).abs()
    assert torch.allclose(moved[moved > 0], torch.full_like(moved[moved > 0], 0.5))
    noisy = gaussian(x, 3.0, generator=torch.Generator().manual_seed(0), bounds=None)
    assert float(noisy.max()) > 10.0  # nothing clamps an unbounded input
    with pytest.raises(ValueError, match="x must be finite"):
        pgd(model, x * torch.inf, y, eps=0.5, alpha=0.5, steps=1, bounds=None)


def test_gaussian_and_trades_clamp_to_the_bounds() -> None:
    model = tiny_net()
    x = _batch(LO, HI)
    lo_t, hi_t = LO.double().reshape(1, 3, 1, 1), HI.double().reshape(1, 3, 1, 1)
    noisy = gaussian(x, 1.0, generator=torch.Generator().manual_seed(0), bounds=(LO, HI))
    assert bool(((noisy >= lo_t) & (noisy <= hi_t)).all())
    assert bool((noisy == lo_t).any()) and bool((noisy == hi_t).any())
    x_adv = trades_perturb(model, x, eps=0.3, alpha=0.1, steps=3, bounds=(LO, HI))
    assert bool(((x_adv >= lo_t) & (x_adv <= hi_t)).all())
    assert float((x_adv - x).abs().max()) <= 0.3 + 1e-12


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(eps=8.0), r"eps=8 is larger than the whole input range for linf .*8/255"),
        (dict(eps=1.5), "larger than the whole input range"),
        (dict(norm="l2", eps=128.0, alpha=0.1), "larger than the whole input range for l2"),
        (dict(bounds=(1.0, 0.0)), "lo must be < hi"),
        (dict(bounds=(0.0,)), "bounds must be a pair"),
        (dict(bounds=(torch.zeros(5), 1.0)), r"bounds: lo has shape \(5,\)"),
        (dict(bounds=(0.0, 0.5)), r"x must lie in \[0,0.5\] \(the bounds\).*bounds=None"),
    ],
)
def test_bad_bounds_and_eps_beyond_the_range_are_refused_before_a_forward(
    kwargs: dict, message: str
) -> None:
    model = Counting(tiny_net())
    x = _batch(0.0, 1.0)
    y = torch.arange(12) % 5
    options = {"eps": 8 / 255, "alpha": 2 / 255, "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        pgd(model, x, y, **options)
    assert model.calls == 0


def test_eps_is_judged_against_the_given_bounds() -> None:
    """eps = 8 is a typo on [0,1] pixels but a fine radius on inputs spanning [0, 255]."""
    model = tiny_net()
    x = _batch(0.0, 1.0) * 255
    y = torch.arange(12) % 5
    x_adv = pgd(model, x, y, eps=8.0, alpha=2.0, steps=2, bounds=(0.0, 255.0))
    assert float((x_adv - x).abs().max()) <= 8.0 + 1e-9


def test_float64_inputs_to_a_float32_model_get_a_package_message() -> None:
    model = Counting(tiny_net(dtype=torch.float32))
    x = _batch(0.0, 1.0)  # float64
    y = torch.arange(12) % 5
    with pytest.raises(ValueError, match=r"x is torch.float64 but the model's parameters are"):
        pgd(model, x, y, eps=8 / 255, alpha=2 / 255, steps=1)
    with pytest.raises(ValueError, match=r"x is torch.float64"):
        trades_perturb(model, x, eps=8 / 255, alpha=2 / 255, steps=1)
    assert model.calls == 0
    x_adv = pgd(model, x.float(), y, eps=8 / 255, alpha=2 / 255, steps=1)  # converted: works
    assert x_adv.dtype == torch.float32
