"""Bad input to any attack raises ValueError with a specific message before the model runs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ncrobust.attacks import gaussian, pgd, trades_perturb


class Counting(nn.Module):
    """Wraps a model and counts forward calls."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


GOOD = dict(norm="linf", eps=0.1, alpha=0.02, steps=2)


def _bad_pgd_cases(x: torch.Tensor, y: torch.Tensor) -> list[tuple[dict, str]]:
    return [
        (dict(norm="l1"), "unknown norm"),
        (dict(norm="Linf"), "unknown norm"),
        (dict(eps=-0.1), "eps must be finite and >= 0"),
        (dict(eps=math.nan), "eps must be finite"),
        (dict(eps=math.inf), "eps must be finite"),
        (dict(eps="0.1"), "eps must be a real number"),
        (dict(alpha=0.0), "alpha must be > 0"),
        (dict(alpha=-0.01), "alpha must be finite and >= 0"),
        (dict(steps=0), "steps must be >= 1"),
        (dict(steps=2.0), "steps must be an integer"),
        (dict(steps=True), "steps must be an integer"),
        (dict(x=x * 2), r"x must lie in \[0,1\]"),
        (dict(x=x - 0.5), r"x must lie in \[0,1\]"),
        (dict(x=torch.full_like(x, math.nan)), r"x must lie in \[0,1\]"),
        (dict(x=(x * 255).to(torch.uint8)), "floating-point"),
        (dict(x=x[0, 0, 0, :1].reshape(1)), r"batch \[N, \.\.\.\]"),
        (dict(x=x[:0], y=y[:0]), "must not be empty"),
        (dict(y=y[:-1]), r"y must have shape \(8,\)"),
        (dict(y=y.float()), "integer class indices"),
        (dict(y=y - 10), "y must be class indices >= 0"),
        (dict(target=y), "targeted=False"),
        (dict(targeted=True, target=y[:3]), r"target must have shape \(8,\)"),
        (dict(targeted=True, target=-y - 1), "target must be class indices >= 0"),
        # a CUDA generator cannot be built on a CPU-only machine; the check reads only .device
        (dict(generator=SimpleNamespace(device=torch.device("cuda"))), "generator is on cuda"),
    ]


def test_each_bad_pgd_argument_raises_before_any_forward(make_model, make_batch) -> None:
    x, y = make_batch(8)
    for override, message in _bad_pgd_cases(x, y):
        model = Counting(make_model())
        kwargs = {**GOOD, "x": x, "y": y, **override}
        with pytest.raises(ValueError, match=message):
            pgd(model, **kwargs)
        assert model.calls == 0, override


def test_labels_beyond_the_logits_width_raise_after_one_forward(make_model, make_batch) -> None:
    """C is the logits' width, known after the first forward; no gradient is taken by then."""
    x, y = make_batch(8)
    cases = [(dict(y=y + 5), "y"), (dict(y=y, targeted=True, target=y * 0 + 5), "target")]
    for kwargs, name in cases:
        model = Counting(make_model())
        with pytest.raises(ValueError, match=rf"{name} must be class indices < C = 5"):
            pgd(model, x, **kwargs, **GOOD)
        assert model.calls == 1
        assert all(p.grad is None for p in model.parameters())


def test_model_must_return_batch_by_class_logits(make_batch) -> None:
    x, y = make_batch(8)
    with pytest.raises(ValueError, match=r"logits of shape \[8, C\]"):
        pgd(nn.Flatten(0), x, y, **GOOD)
    with pytest.raises(ValueError, match=r"logits of shape \[8, C\]"):
        trades_perturb(nn.Flatten(0), x, eps=0.1, alpha=0.02, steps=1)


def test_bad_trades_and_gaussian_arguments(make_model, make_batch) -> None:
    x, _ = make_batch(8)
    model = Counting(make_model())
    for kwargs, message in [
        (dict(eps=0.1, alpha=0.02, steps=1, norm="l3"), "unknown norm"),
        (dict(eps=-1.0, alpha=0.02, steps=1), "eps must be finite and >= 0"),
        (dict(eps=0.1, alpha=0.0, steps=1), "alpha must be > 0"),
        (dict(eps=0.1, alpha=0.02, steps=0), "steps must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            trades_perturb(model, x, **kwargs)
    with pytest.raises(ValueError, match=r"x must lie in \[0,1\]"):
        trades_perturb(model, x + 1, eps=0.1, alpha=0.02, steps=1)
    assert model.calls == 0
    with pytest.raises(ValueError, match="std must be finite and >= 0"):
        gaussian(x, -0.1)
    with pytest.raises(ValueError, match=r"x must lie in \[0,1\]"):
        gaussian(x * 3, 0.1)
    with pytest.raises(ValueError, match="floating-point"):
        gaussian(torch.zeros(2, 3, dtype=torch.uint8), 0.1)
