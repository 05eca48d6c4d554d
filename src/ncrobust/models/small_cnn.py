"""A small CNN for 8x8 digits that trains (and adversarially trains) in seconds on a CPU.

Three conv3x3 + BN + ReLU blocks (16, 32, 32 channels; the second with stride 2, so 8x8 digits
become a 4x4 map), an average pool to ``pooled`` x ``pooled`` (the identity for digits), then a
Linear + BN + ReLU penultimate layer (128-d) and the Linear classifier: 81k parameters, about
5 ms for a forward + backward of a 128-image batch on one CPU core. The pool lets it take other
small inputs too (28 px, 32 px with 3 channels, ...).

Taps: ``block1`` .. ``block3`` (each conv block's output), ``penultimate`` ([B, feature_dim]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ncrobust.models.base import TappedClassifier, check_arguments
from ncrobust.models.registry import register_model
from ncrobust.views import PENULTIMATE


def _conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """conv3x3 (no bias: BN follows) + BN + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),  # in place on the BN output, never on a tapped tensor
    )


class PoolTo(nn.Module):
    """Adaptive average pool to ``size`` x ``size``; maps already that size pass through as is."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, h: Tensor) -> Tensor:
        """``h`` pooled to the target size (8 px digits reach it without pooling)."""
        if h.shape[-2] == self.size and h.shape[-1] == self.size:
            return h  # the generic CPU kernel costs ~15 % of a step even as an identity
        return F.adaptive_avg_pool2d(h, self.size)


@register_model("small_cnn")
class SmallCNN(TappedClassifier):
    """Three conv blocks (the second strided) and a ``feature_dim``-wide penultimate layer."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        image_size: int = 8,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        *,
        widths: tuple[int, int, int] = (16, 32, 32),
        pooled: int = 4,
        feature_dim: int = 128,
    ) -> None:
        num_classes, in_channels, image_size = check_arguments(
            "small_cnn", num_classes, in_channels, image_size, min_image_size=4
        )
        if len(widths) != 3 or min(widths) < 1 or pooled < 1 or feature_dim < 1:
            raise ValueError(
                f"small_cnn: need three positive widths, pooled >= 1 and feature_dim >= 1, "
                f"got widths={widths}, pooled={pooled}, feature_dim={feature_dim}"
            )
        w1, w2, w3 = widths
        stages: list[tuple[str, nn.Module]] = [
            ("block1", _conv_block(in_channels, w1, stride=1)),
            ("block2", _conv_block(w1, w2, stride=2)),
            ("block3", _conv_block(w2, w3, stride=1)),
            (
                PENULTIMATE,
                nn.Sequential(
                    PoolTo(pooled),
                    nn.Flatten(),
                    nn.Linear(w3 * pooled * pooled, feature_dim, bias=False),
                    nn.BatchNorm1d(feature_dim),
                    nn.ReLU(inplace=True),
                ),
            ),
        ]
        super().__init__(
            stages, nn.Linear(feature_dim, num_classes), in_channels=in_channels, mean=mean, std=std
        )
        self.image_size = image_size
