"""Models by name: a decorator adds a builder, ``create_model`` builds one from plain arguments."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import TypeVar

from ncrobust.errors import UsageError
from ncrobust.models.base import TappedClassifier

# A builder takes keyword arguments num_classes, in_channels, image_size, mean, std.
Builder = TypeVar("Builder", bound=Callable[..., TappedClassifier])

_REGISTRY: dict[str, Callable[..., TappedClassifier]] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator adding a builder (a function or a ``TappedClassifier`` subclass) under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")

    def add(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return add


def available_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def create_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> TappedClassifier:
    """Build the registered model ``name``; ``mean``/``std`` default to 0/1 (no normalisation)."""
    builder = _REGISTRY.get(name)
    if builder is None:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"unknown model {name!r}{hint}; available: {available_models()}")
    return builder(
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        mean=mean,
        std=std,
    )
