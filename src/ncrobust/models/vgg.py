"""VGG11 with batch norm, as in the paper: configuration A, a global average pool, one Linear.

CIFAR layout (image_size < 128; 32 px in the paper): the eight conv blocks of configuration A
without its last max-pool, so a 32 px image leaves a 2x2 map that the average pool turns into
512 features; conv weights He-normal with fan-in. ImageNette layout (image_size >= 128; 160 px in
the paper, the released ``vgg11_bn_pool``): the last max-pool is kept, a 160 px image leaves 5x5,
and conv weights are He-normal with fan-out. Both: BN weight 1 / bias 0, Linear N(0, 0.01) / 0.

Taps: ``block1`` .. ``block7`` are the outputs of conv blocks 1-7 (after their max-pool, if any),
i.e. the inputs of convs 2-8; ``penultimate`` is block 8 after the average pool, the input of the
Linear layer ([B, 512]).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

from ncrobust.models.base import TappedClassifier, check_arguments, layout_for
from ncrobust.models.registry import register_model
from ncrobust.views import PENULTIMATE

# Configuration A: output channels of each 3x3 conv; "M" is a 2x2 max-pool.
CONFIG_A: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def _conv_blocks(in_channels: int, config: Sequence[int | str]) -> list[nn.Sequential]:
    """One block per conv: conv3x3 + BN + ReLU, followed by the max-pool that comes next, if any."""
    blocks: list[nn.Sequential] = []
    channels = in_channels
    for item in config:
        if item == "M":
            blocks[-1].append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        width = int(item)
        blocks.append(
            nn.Sequential(
                nn.Conv2d(channels, width, kernel_size=3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),  # in place on the BN output, never on a tapped tensor
            )
        )
        channels = width
    return blocks


@register_model("vgg11_bn")
class VGG11BN(TappedClassifier):
    """VGG11-BN of the paper (CIFAR layout below 128 px, ImageNette layout from 128 px)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        num_classes, in_channels, image_size = check_arguments(
            "vgg11_bn", num_classes, in_channels, image_size, min_image_size=16
        )
        layout = layout_for(image_size)
        config = CONFIG_A if layout == "imagenette" else CONFIG_A[:-1]
        blocks = _conv_blocks(in_channels, config)
        last = blocks.pop()
        last.extend([nn.AdaptiveAvgPool2d(1), nn.Flatten()])  # = the released 2x2 / 5x5 avg pool
        stages = [(f"block{i}", block) for i, block in enumerate(blocks, start=1)]
        stages.append((PENULTIMATE, last))
        super().__init__(
            stages, nn.Linear(512, num_classes), in_channels=in_channels, mean=mean, std=std
        )
        self.layout = layout
        self.image_size = image_size
        self._initialise(fan_mode="fan_out" if layout == "imagenette" else "fan_in")

    def _initialise(self, fan_mode: Literal["fan_in", "fan_out"]) -> None:
        """The released initialisation: He-normal convs (fan-in at 32 px, fan-out at 160 px)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode=fan_mode, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.01)
                nn.init.zeros_(module.bias)
