"""The tapped-classifier base: one forward pass gives logits and any named intermediate features.

A model is a chain of named stages followed by one ``nn.Linear``. Each stage's output is a *tap*;
the last stage is always ``"penultimate"`` and yields the ``[B, p]`` input of the linear layer.
Taps are collected while the chain runs, so there are no hooks to leak and no copy of the network.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from typing import overload

import torch
from torch import Tensor, nn

from ncrobust.errors import UsageError
from ncrobust.views import PENULTIMATE

# Images at least this large get the ImageNette (160 px) layout of the paper models, smaller ones
# the CIFAR (32 px) layout; both end in a global average pool, so any size in a range works.
LARGE_IMAGE_SIZE = 128


def layout_for(image_size: int) -> str:
    """``"imagenette"`` for images of at least ``LARGE_IMAGE_SIZE`` pixels, else ``"cifar"``."""
    return "imagenette" if image_size >= LARGE_IMAGE_SIZE else "cifar"


def _as_int(model: str, label: str, value: object) -> int:
    """``value`` as a plain int (numpy integers accepted), refusing bools, floats and strings."""
    if isinstance(value, bool):
        raise UsageError(f"{model}: {label} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise UsageError(f"{model}: {label} must be an integer, got {value!r}") from None


def check_arguments(
    model: str, num_classes: int, in_channels: int, image_size: int, *, min_image_size: int
) -> tuple[int, int, int]:
    """Validate the shape arguments every builder takes, before any layer is made."""
    num_classes = _as_int(model, "num_classes", num_classes)
    in_channels = _as_int(model, "in_channels", in_channels)
    image_size = _as_int(model, "image_size", image_size)
    if num_classes < 2:
        raise UsageError(f"{model}: num_classes must be at least 2, got {num_classes}")
    if in_channels < 1:
        raise UsageError(f"{model}: in_channels must be at least 1, got {in_channels}")
    if image_size < min_image_size:
        raise UsageError(
            f"{model}: image_size {image_size} is too small; "
            f"it needs at least {min_image_size}x{min_image_size} pixels"
        )
    return num_classes, in_channels, image_size


def normalisation_constants(
    in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std), defaulting to 0 / 1 (no normalisation), checked for length/sign."""
    mean_t = tuple(float(m) for m in mean) if mean is not None else (0.0,) * in_channels
    std_t = tuple(float(s) for s in std) if std is not None else (1.0,) * in_channels
    for label, values in (("mean", mean_t), ("std", std_t)):
        if len(values) != in_channels:
            raise UsageError(
                f"{label} has {len(values)} values but in_channels is {in_channels}: "
                "give one value per input channel"
            )
        if not all(math.isfinite(v) for v in values):
            raise UsageError(f"{label} must be finite, got {values}")
    if any(s <= 0 for s in std_t):
        raise UsageError(f"std must be positive, got {std_t}")
    return mean_t, std_t


class TappedClassifier(nn.Module):
    """An image classifier whose forward can also return named intermediate activations.

    Inputs are float pixels in [0, 1]; ``(x - mean) / std`` happens inside ``forward`` with the
    ``mean``/``std`` buffers (shape ``[1, C, 1, 1]``), so attack budgets are in pixel units.
    Build your own architecture for the same measurements by passing ``stages`` (ordered
    ``(name, module)`` pairs, the last named ``"penultimate"`` producing ``[B, p]``) and a
    ``classifier``; subclasses in this package do exactly that.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        stages: Iterable[tuple[str, nn.Module]],
        classifier: nn.Linear,
        *,
        in_channels: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        stage_list = list(stages)
        names = [name for name, _ in stage_list]
        if not stage_list or names[-1] != PENULTIMATE:
            raise ValueError(f"the last stage must be named {PENULTIMATE!r}, got stages {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        if not isinstance(classifier, nn.Linear):
            raise ValueError(f"classifier must be an nn.Linear, got {type(classifier).__name__}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        mean_t, std_t = normalisation_constants(in_channels, mean, std)
        self.in_channels = in_channels
        self.num_classes = classifier.out_features
        self.feature_dim = classifier.in_features
        self.register_buffer("mean", torch.tensor(mean_t).reshape(1, in_channels, 1, 1))
        self.register_buffer("std", torch.tensor(std_t).reshape(1, in_channels, 1, 1))
        self.stages = nn.ModuleDict(dict(stage_list))  # insertion order = depth order
        self.head = classifier

    def layers(self) -> list[str]:
        """Tap names in depth order; the last one is ``"penultimate"``."""
        return list(self.stages.keys())

    @property
    def classifier(self) -> nn.Linear:
        """The last layer: ``W = classifier.weight`` (C x p), ``b = classifier.bias``."""
        return self.head

    def _wanted(self, taps: Sequence[str]) -> frozenset[str]:
        """The requested tap names, refusing unknown ones with the list of valid names."""
        wanted = frozenset([taps] if isinstance(taps, str) else taps)
        unknown = sorted(wanted.difference(self.stages.keys()))
        if unknown:
            raise UsageError(
                f"unknown tap(s) {unknown} for {type(self).__name__}; "
                f"valid taps in depth order: {self.layers()}"
            )
        return wanted

    def _check_input(self, x: Tensor) -> None:
        """Refuse inputs that would broadcast or scale silently wrong against the normalisation."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input of shape [B, {self.in_channels}, H, W], got {list(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"expected float pixels in [0, 1], got dtype {x.dtype} "
                "(convert uint8 images with x.float() / 255)"
            )

    @overload
    def forward(self, x: Tensor, taps: None = None) -> Tensor: ...

    @overload
    def forward(self, x: Tensor, taps: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]: ...

    def forward(
        self, x: Tensor, taps: Sequence[str] | None = None
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Logits for pixels ``x``; with ``taps`` also ``{name: activation}`` from the same pass."""
        wanted = self._wanted(taps) if taps is not None else frozenset()
        self._check_input(x)
        h = (x - self.mean) / self.std
        found: dict[str, Tensor] = {}
        for name, stage in self.stages.items():
            h = stage(h)
            if name in wanted:
                found[name] = h
        logits = self.head(h)
        return logits if taps is None else (logits, found)
