"""Small fixed-seed models and batches for the attack tests (CPU, milliseconds per attack)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

NUM_CLASSES = 5


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: intra-op threads only add overhead (and contention on shared CPUs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TinyNet(nn.Module):
    """conv-BN-ReLU, strided conv-ReLU, linear: small, smooth enough, with BN to probe modes."""

    def __init__(self, in_channels: int = 3, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def tiny_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> TinyNet:
    """A TinyNet with fixed weights and non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    model = TinyNet().to(dtype)
    with torch.no_grad():
        bn = model.body[1]
        assert isinstance(bn, nn.BatchNorm2d)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        model.body[-1].weight.mul_(8.0)  # confident logits, so attacks change the loss visibly
    return model.eval()


def pixel_batch(
    n: int = 32, seed: int = 1, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """Random 3x8x8 images in [0,1] (some pixels exactly 0 or 1) and labels in [0, C)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, 8, 8, generator=g, dtype=dtype) * 1.2 - 0.1).clamp(0, 1)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return x, y


@pytest.fixture
def model() -> TinyNet:
    return tiny_net()


@pytest.fixture
def batch() -> tuple[Tensor, Tensor]:
    return pixel_batch()


@pytest.fixture
def make_model():
    return tiny_net


@pytest.fixture
def make_batch():
    return pixel_batch
