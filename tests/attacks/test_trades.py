"""trades_perturb: start, feasibility, KL ascent, a re-derivation of the reference l_inf loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ncrobust.attacks import NORMS, TRADES_START_STD, trades_perturb

BUDGETS = {"linf": (0.1, 0.02), "l2": (0.5, 0.1)}


class Recording(nn.Module):
    """Wraps a model and keeps a copy of every input it sees."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


def _kl(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor) -> float:
    with torch.no_grad():
        p = F.softmax(model(x), dim=1)
        return float(F.kl_div(F.log_softmax(model(x_adv), dim=1), p, reduction="sum"))


@pytest.mark.parametrize("norm", NORMS)
def test_starts_from_x_plus_small_gaussian_noise(make_model, make_batch, norm) -> None:
    model = Recording(make_model())
    x, _ = make_batch(64)
    eps, alpha = BUDGETS[norm]
    trades_perturb(
        model,
        x,
        eps=eps,
        alpha=alpha,
        steps=3,
        norm=norm,
        generator=torch.Generator().manual_seed(4),
    )
    assert len(model.inputs) == 1 + 3  # f(x) once, then one forward per step
    assert torch.equal(model.inputs[0], x)
    noise = torch.empty_like(x).normal_(generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model.inputs[1], x + TRADES_START_STD * noise, atol=1e-12, rtol=0)
    assert abs(float((model.inputs[1] - x).std()) - 1e-3) < 5e-5


@pytest.mark.parametrize("norm", NORMS)
def test_stays_feasible_and_increases_the_kl(make_model, make_batch, norm) -> None:
    model = make_model()
    x, _ = make_batch(64)
    eps, alpha = BUDGETS[norm]
    g = torch.Generator().manual_seed(0)
    x_adv = trades_perturb(model, x, eps=eps, alpha=alpha, steps=10, norm=norm, generator=g)
    delta = (x_adv - x).flatten(1)
    dist = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((dist <= eps * (1 + 1e-9)).all())
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    noise = torch.empty_like(x).normal_(generator=torch.Generator().manual_seed(0))
    start = x + TRADES_START_STD * noise
    kl_start, kl_adv = _kl(model, x, start), _kl(model, x, x_adv)
    assert kl_adv > 1000 * kl_start


def _reference_trades_linf(model, x, noise, eps, alpha, steps):
    """Re-derivation of the released/original TRADES l_inf loop (f(x) recomputed per step)."""
    x_adv = x + TRADES_START_STD * noise
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        loss = nn.KLDivLoss(reduction="sum")(
            F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1)
        )
        (grad,) = torch.autograd.grad(loss, [x_adv])
        x_adv = x_adv.detach() + alpha * torch.sign(grad)
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    return x_adv


def test_linf_matches_the_reference_loop_in_eval_mode(make_model, make_batch) -> None:
    model = make_model()
    x, _ = make_batch(32)
    ours = trades_perturb(
        model, x, eps=0.1, alpha=0.02, steps=10, generator=torch.Generator().manual_seed(9)
    )
    noise = torch.empty_like(x).normal_(generator=torch.Generator().manual_seed(9))
    reference = _reference_trades_linf(model, x, noise, 0.1, 0.02, 10)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("norm", NORMS)
def test_reproducible_no_param_grad_mode_kept(make_model, make_batch, norm, training) -> None:
    model = make_model().train(training)
    x, _ = make_batch(16)
    eps, alpha = BUDGETS[norm]

    def run(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return trades_perturb(model, x, eps=eps, alpha=alpha, steps=2, norm=norm, generator=g)

    first = run(0)
    if not training:  # in train mode BN statistics move between calls, by design of the caller
        assert torch.equal(first, run(0))
    assert not torch.equal(first, run(1))
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training is training for m in model.modules())
    assert not first.requires_grad
