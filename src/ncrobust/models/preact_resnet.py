"""PreActResNet18 (He et al. 2016, as defined by Rice et al. 2020) in the paper's two layouts.

CIFAR layout (image_size < 128; 32 px in the paper): a 3x3 stride-1 stem conv, four stages of two
pre-activation basic blocks (64, 128, 256, 512 channels; stride 1, 2, 2, 2), a final BN + ReLU,
a global average pool (4x4 at 32 px) and Linear(512, C); PyTorch's default initialisation.
ImageNette layout (image_size >= 128; 160 px in the paper): a 7x7 stride-2 stem conv + BN + ReLU +
3x3 stride-2 max-pool, the first block of stage 1 without its own pre-activation (the stem already
ends in BN + ReLU), the same stages, a global average pool (5x5 at 160 px); conv weights He-normal
with fan-out, as the released ImageNette model.

Taps: ``stem`` (the stem's output, the input of stage 1), ``layer1`` .. ``layer4`` (each stage's
output, before any activation), ``penultimate`` (after the final BN + ReLU + pool, [B, 512]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ncrobust.models.base import TappedClassifier, check_arguments, layout_for
from ncrobust.models.registry import register_model
from ncrobust.views import PENULTIMATE

STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2


class PreActBlock(nn.Module):
    """Basic pre-activation block: BN-ReLU, conv3x3, BN-ReLU, conv3x3, plus the shortcut.

    A projection shortcut (1x1 conv) is applied to the pre-activated input when the shape changes;
    otherwise the raw input is added back.
    """

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, preactivate: bool = True
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes) if preactivate else None
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Residual update of ``x`` (never modified in place: it may be a tap)."""
        pre = F.relu(self.bn1(x)) if self.bn1 is not None else x
        residual = self.shortcut(pre) if self.shortcut is not None else x
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return out + residual


def _stage(in_planes: int, planes: int, stride: int, preactivate_first: bool) -> nn.Sequential:
    """``BLOCKS_PER_STAGE`` blocks; only the first may change resolution or width."""
    blocks = [PreActBlock(in_planes, planes, stride, preactivate=preactivate_first)]
    blocks += [PreActBlock(planes, planes) for _ in range(BLOCKS_PER_STAGE - 1)]
    return nn.Sequential(*blocks)


def _stem(in_channels: int, layout: str) -> nn.Sequential:
    """3x3 conv for small images; 7x7/2 conv + BN + ReLU + 3x3/2 max-pool for ImageNette."""
    if layout == "cifar":
        return nn.Sequential(nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False))
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),  # in place on the BN output, inside the stage
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )


@register_model("preact_resnet18")
class PreActResNet18(TappedClassifier):
    """PreActResNet18 of the paper (CIFAR layout below 128 px, ImageNette layout from 128 px)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        num_classes, in_channels, image_size = check_arguments(
            "preact_resnet18", num_classes, in_channels, image_size, min_image_size=8
        )
        layout = layout_for(image_size)
        stages: list[tuple[str, nn.Module]] = [("stem", _stem(in_channels, layout))]
        in_planes = 64
        for i, planes in enumerate(STAGE_WIDTHS, start=1):
            stride = 1 if i == 1 else 2
            # ImageNette: the stem ends in BN + ReLU, so stage 1 starts without pre-activation.
            preactivate_first = not (layout == "imagenette" and i == 1)
            stages.append((f"layer{i}", _stage(in_planes, planes, stride, preactivate_first)))
            in_planes = planes
        final = nn.Sequential(
            nn.BatchNorm2d(in_planes),
            nn.ReLU(inplace=True),  # in place on the BN output, inside the stage
            nn.AdaptiveAvgPool2d(1),  # = the released 4x4 (32 px) / 5x5 (160 px) average pool
            nn.Flatten(),
        )
        stages.append((PENULTIMATE, final))
        super().__init__(
            stages, nn.Linear(in_planes, num_classes), in_channels=in_channels, mean=mean, std=std
        )
        self.layout = layout
        self.image_size = image_size
        if layout == "imagenette":
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
