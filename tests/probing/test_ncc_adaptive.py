"""The ncc_adaptive view: PGD on each layer's nearest-class-mean rule, against the transfer attack
(network PGD read by the same rule) and against an independent plain-torch re-implementation."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncrobust.config import build_config
from ncrobust.errors import UsageError
from ncrobust.probing.engine import derive_seed
from ncrobust.probing.measure import AttackSettings, measure
from ncrobust.runtime import make_generator

from .conftest import Net1D, one_thread, sequences  # noqa: F401 - the autouse fixture

ATTACK = AttackSettings(eps=0.2, alpha=0.05, steps=10)
LAYERS = ["act1", "penultimate"]


def _trained_net() -> tuple[Net1D, dict[str, tuple[Tensor, Tensor]]]:
    torch.manual_seed(0)
    net = Net1D()
    x, y = sequences(40, seed=1)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(60):
        optimiser.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimiser.step()
    return net.eval(), {"train": (x, y), "test": sequences(20, seed=2)}


def _ncc(table: pd.DataFrame, view: str, layer: str, metric: str = "ncc_accuracy") -> float:
    row = table[
        (table.split == "test")
        & (table.view == view)
        & (table.layer.astype(str) == layer)
        & (table.metric == metric)
    ]
    assert len(row) == 1, (view, layer, metric)
    return float(row.value.iloc[0])


def test_adaptive_attack_is_no_weaker_than_transfer() -> None:
    net, data = _trained_net()
    table = measure(net, data, layers=LAYERS, views=["clean", "pgd", "ncc_adaptive"], attack=ATTACK)
    adaptive = table[table.view == "ncc_adaptive"]
    assert set(adaptive.metric) == {"ncc_accuracy", "ncc_match"}
    assert set(adaptive.layer.astype(str)) == set(LAYERS)
    assert set(adaptive.split) == {"train", "test"}
    for layer in LAYERS:
        clean = _ncc(table, "clean", layer)
        transfer = _ncc(table, "pgd", layer)
        attacked = _ncc(table, "ncc_adaptive", layer)
        assert attacked <= transfer <= clean, layer
    assert _ncc(table, "ncc_adaptive", "act1") < _ncc(table, "clean", "act1")


class BlindHead(nn.Module):
    """Logits that ignore the input (a zero head): network PGD has no gradient to follow, but
    the flattened input's NCC rule is as attackable as ever."""

    def __init__(self) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.head = nn.Linear(40, 3)
        nn.init.zeros_(self.head.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.flat(x))


def test_adaptive_attack_strictly_beats_transfer_when_the_network_hides_the_rule() -> None:
    x, y = sequences(30, seed=1)
    data = {"train": (x, y), "test": sequences(20, seed=2)}
    attack = AttackSettings(eps=0.3, alpha=0.075, steps=10)
    table = measure(BlindHead().eval(), data, views=["clean", "pgd", "ncc_adaptive"], attack=attack)
    transfer = _ncc(table, "pgd", "penultimate")
    adaptive = _ncc(table, "ncc_adaptive", "penultimate")
    assert transfer > 0.8  # network PGD only adds its random start
    assert adaptive < transfer - 0.3


def _direct_adaptive(
    features: nn.Module, x: Tensor, y: Tensor, train: tuple[Tensor, Tensor], layer: str
) -> float:
    """NCC accuracy of ``features`` under PGD on the margin of −‖h − μ_c‖², from scratch."""
    xt, yt = train
    with torch.no_grad():
        h = features(xt).flatten(1).double()
    means = torch.stack([h[yt == c].mean(0) for c in range(3)])
    eps, alpha = ATTACK.eps, ATTACK.alpha
    generator = make_generator(derive_seed(0, 0, "test", "ncc_adaptive", layer))
    start = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
    x_adv = (x + start).clamp(0, 1)
    m = means.float()
    for _ in range(ATTACK.steps):
        x_adv.requires_grad_(True)
        f = features(x_adv).flatten(1)
        distances = torch.cdist(f, m).square()
        own = distances[torch.arange(len(y)), y]
        others = distances + F.one_hot(y, 3) * 1e9
        margin = own - others.min(1).values  # > 0: misclassified
        (grad,) = torch.autograd.grad(margin.sum(), [x_adv])
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        nearest = torch.cdist(features(x_adv).flatten(1).double(), means).argmin(1)
    return float((nearest == y).double().mean())


def test_adaptive_accuracy_matches_a_direct_computation() -> None:
    net, data = _trained_net()
    table = measure(net, data, layers=LAYERS, views=["clean", "ncc_adaptive"], attack=ATTACK)
    x, y = data["test"]
    early = nn.Sequential(net.conv1, net.act1)
    n = len(y)
    for layer, features in (("act1", early), ("penultimate", net.penultimate)):
        direct = _direct_adaptive(features, x, y, data["train"], layer)  # type: ignore[arg-type]
        assert _ncc(table, "ncc_adaptive", layer) == pytest.approx(direct, abs=1.5 / n), layer


def test_adaptive_view_is_opt_in_and_takes_a_radius() -> None:
    for mode in ("st", "at", "trades"):
        config = build_config("digits", overrides={"mode": mode, "out": "x"})
        assert not any(v.startswith("ncc_adaptive") for v in config.views)
    everything = build_config("digits", overrides={"views": "all", "out": "x"})
    assert "ncc_adaptive" not in everything.views
    chosen = build_config(
        "digits", overrides={"views": "clean,ncc_adaptive@test@eps=4/255", "out": "x"}
    )
    assert "ncc_adaptive@test@eps=4/255" in chosen.views
    with pytest.raises(UsageError, match="eps=8 is larger than the whole"):
        build_config("digits", overrides={"views": "clean,ncc_adaptive@eps=8", "out": "x"})


def test_a_view_with_its_own_radius_is_weaker_at_a_smaller_radius() -> None:
    net, data = _trained_net()
    views = ["clean", "ncc_adaptive@test@eps=0.05", "ncc_adaptive@test"]
    table = measure(net, data, layers=LAYERS, views=views, attack=ATTACK)
    assert set(table.view) == {"clean", "ncc_adaptive@eps=0.05", "ncc_adaptive"}
    for layer in LAYERS:
        small = _ncc(table, "ncc_adaptive@eps=0.05", layer)
        assert _ncc(table, "ncc_adaptive", layer) < small <= _ncc(table, "clean", layer)
