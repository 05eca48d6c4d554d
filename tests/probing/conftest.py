"""Small foreign models and data for the measure tests (CPU, milliseconds per forward pass)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from ncrobust.analysis import AttackSettings
from ncrobust.collapse import collapse_metrics

CLASSES = 3

ATTACK = AttackSettings(eps=0.1, alpha=0.05, steps=2)
KEYS = ["split", "view", "layer", "metric"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread for these tiny models (imported by the tests that use it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def values(table: pd.DataFrame) -> pd.Series:
    """A measure table's values indexed by split, view, layer and metric."""
    return table.astype({"layer": str}).set_index(KEYS).value.sort_index()


def assert_penultimate(
    table: pd.DataFrame,
    feats: Tensor,
    labels: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    logits: Tensor,
    rel: float = 1e-5,
) -> None:
    """measure()'s clean train ``penultimate`` metrics equal ``collapse_metrics`` of the given
    features (float64), the given head weight and the given logits."""
    rows = table[(table.layer == "penultimate") & (table.view == "clean")]
    rows = rows[rows.split == "train"]
    measured = dict(zip(rows.metric, rows.value, strict=True))
    as64 = lambda t: None if t is None else t.detach().double()  # noqa: E731
    direct = collapse_metrics(
        as64(feats), labels, CLASSES, as64(weight), as64(bias), None, logits.detach().double()
    )
    shared = sorted(set(direct) & set(measured))
    assert {"nc1", "nc2_equinorm", "nc4"} <= set(shared)
    if weight is not None:
        assert "nc3" in shared
    for metric in shared:
        assert measured[metric] == pytest.approx(direct[metric], rel=rel, abs=1e-9), metric


class Net1D(nn.Module):
    """A 1-D CNN for MNIST-1D-style sequences [N, 1, 40]."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 4, 5, padding=2)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv1d(4, 6, 3, padding=1, stride=2)
        self.act2 = nn.ReLU()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(6 * 20, 8)
        self.act3 = nn.ReLU()
        self.head = nn.Linear(8, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.head(self.act3(self.fc(self.flat(h))))

    def penultimate(self, x: Tensor) -> Tensor:
        """The classifier's input, computed directly (no hooks)."""
        h = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.fc(self.flat(h)))


def sequences(per_class: int, seed: int, classes: int = CLASSES) -> tuple[Tensor, Tensor]:
    """Class-dependent noisy waves in [0, 1], [N, 1, 40], labels in class order."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 2 * math.pi, 40)
    xs, ys = [], []
    for c in range(classes):
        wave = torch.sin((c + 1) * t)[None, None, :]
        noise = 0.4 * torch.randn(per_class, 1, 40, generator=g)
        xs.append(((wave + noise) / 3 + 0.5).clamp(0, 1))
        ys.append(torch.full((per_class,), c))
    return torch.cat(xs), torch.cat(ys)


def images(per_class: int, seed: int, size: int = 8, channels: int = 1) -> tuple[Tensor, Tensor]:
    """uint8 images [N, C, size, size] with class-dependent means, labels in class order."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c in range(CLASSES):
        base = 60.0 + 60.0 * c
        noise = 50.0 * torch.randn(per_class, channels, size, size, generator=g)
        xs.append((base + noise).clamp(0, 255).round().to(torch.uint8))
        ys.append(torch.full((per_class,), c))
    return torch.cat(xs), torch.cat(ys)


class ConvNet(nn.Module):
    """conv → BN → in-place ReLU → global pool → Linear head; an unused projection after it."""

    def __init__(self, channels: int = 1, classes: int = CLASSES) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.head = nn.Linear(6, classes)
        self.projection = nn.Linear(6, 16)  # registered last, never used in forward

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.flat(self.pool(self.relu(self.bn(self.conv(x))))))


def with_bn_stats(model: nn.Module) -> nn.Module:
    """Non-trivial BN running statistics, eval mode."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@dataclass
class Output:
    """A Hugging Face-style output object."""

    loss: Tensor | None
    logits: Tensor


class DictNet(nn.Module):
    """Returns a dict with ``logits`` and ``hidden_states`` (as Hugging Face models do)."""

    def __init__(self, inner: nn.Module, key: str = "logits") -> None:
        super().__init__()
        self.inner = inner
        self.key = key

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"hidden_states": x.flatten(1), self.key: self.inner(x)}
