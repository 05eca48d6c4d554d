"""The logit margin and PGD on it."""

from __future__ import annotations

import torch
from torch import nn

from ncrobust.attacks import pgd
from ncrobust.attacks.margin import margin, margin_pgd


def test_margin_is_positive_exactly_when_misclassified() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0], [1.0, 1.0, -1.0]])
    y = torch.tensor([0, 1, 0])
    assert margin(logits, y).tolist() == [-2.0, 3.0, 0.0]


def test_margin_pgd_stays_in_the_ball_and_breaks_a_saturated_model() -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 8)
    y = (x[:, 0] > 0.5).long()
    weight = torch.zeros(2, 8)
    weight[1, 0], weight[0, 0] = 1e4, -1e4  # logit gaps of thousands: softmax saturates
    model = nn.Linear(8, 2)
    with torch.no_grad():
        model.weight.copy_(weight)
        model.bias.copy_(torch.tensor([5e3, -5e3]))
    near = (x[:, 0] - 0.5).abs() < 0.05  # points a radius of 0.1 can push across
    options = {"norm": "linf", "eps": 0.1, "alpha": 0.05, "steps": 4}
    adv = margin_pgd(model, x, y, bounds=(0.0, 1.0), start=x, **options)  # type: ignore[arg-type]
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert (model(adv).argmax(1) != y)[near].all()
        # beyond a logit gap of ~100 the cross-entropy's gradient underflows to 0: PGD on it
        # leaves those points where they are, the near ones among them included
        saturated = (x[:, 0] - 0.5).abs() > 0.006
        ce = pgd(model, x, y, random_start=False, **options)  # type: ignore[arg-type]
        assert torch.equal(ce[saturated], x[saturated]) and (near & saturated).sum() > 0
