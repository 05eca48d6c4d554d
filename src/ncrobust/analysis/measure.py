"""Measure any model: accuracy, loss and NC of clean and perturbed views, per layer.

:func:`measure` takes any ``torch.nn.Module`` whose taps are named modules (forward hooks by
module name; ``penultimate`` is the input of the final ``nn.Linear``) or an ncrobust model
(its own taps), and data as an :class:`~ncrobust.data.ImageDataset` or tensors, and returns
the same tidy table as training (``epoch, split, view, layer, metric, value``), computed by
the same probes. Features are exact at full resolution by default; ``pool`` average-pools
convolutional features to ``pool × pool`` for comparison with the paper's subsampling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ncrobust.config import SPLITS, VIEWS, probe_plan
from ncrobust.data import ImageDataset, Split
from ncrobust.errors import UsageError
from ncrobust.models import TappedClassifier
from ncrobust.runs import METRIC_COLUMNS, STATS_COLUMNS
from ncrobust.runtime import resolve_device
from ncrobust.training import distributed
from ncrobust.training.probes import (
    Extractor,
    PerturbedSet,
    Prober,
    ProbeSpec,
    tapped_extractor,
)

PENULTIMATE = "penultimate"


@dataclass(frozen=True)
class AttackSettings:
    """The threat model of the perturbed views (defaults: the paper's CIFAR l_inf)."""

    norm: str = "linf"
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    gaussian_std: float = 8 / 255
    precision: str = "fp32"


class HookedExtractor:
    """Features of named modules of any model, captured by forward hooks for one call.

    A layer name is a module name from ``model.named_modules()`` (its output is the feature),
    ``name:input`` for the input of that module, or ``penultimate`` for the input of
    ``classifier`` (default: the last ``nn.Linear`` of the model). Hooks live only during a
    call, so nothing leaks between calls.
    """

    def __init__(self, model: nn.Module, classifier: str | None = None) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        if classifier is None:
            linears = [name for name, m in self.modules.items() if isinstance(m, nn.Linear)]
            if not linears:
                raise UsageError("the model has no nn.Linear: name its classifier module")
            classifier = linears[-1]
        if classifier not in self.modules or not isinstance(self.modules[classifier], nn.Linear):
            raise UsageError(f"classifier {classifier!r} is not an nn.Linear module of the model")
        self.classifier_name = classifier
        self.classifier: nn.Linear = self.modules[classifier]  # type: ignore[assignment]

    def layers(self) -> list[str]:
        """Every module that can be tapped (in registration order), then ``penultimate``."""
        names = [n for n, m in self.modules.items() if n and not isinstance(m, nn.Linear)]
        return [*names, PENULTIMATE]

    def resolve(self, layers: Sequence[str]) -> list[str]:
        """Check the layer names (``all`` for every conv/linear input plus penultimate)."""
        if list(layers) == ["all"]:
            return [
                f"{name}:input"
                for name, m in self.modules.items()
                if isinstance(m, nn.Conv2d | nn.Linear) and name != self.classifier_name
            ] + [PENULTIMATE]
        for layer in layers:
            name = layer.removesuffix(":input")
            if layer != PENULTIMATE and name not in self.modules:
                raise UsageError(f"the model has no module named {name!r} to tap")
        return list(layers)

    def __call__(
        self, x: torch.Tensor, layers: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        captured: dict[str, torch.Tensor] = {}
        handles = []
        try:
            for layer in layers:
                wants_input = layer == PENULTIMATE or layer.endswith(":input")
                name = (
                    self.classifier_name if layer == PENULTIMATE else layer.removesuffix(":input")
                )
                module = self.modules[name]
                if wants_input:
                    handles.append(module.register_forward_hook(_grab(captured, layer, True)))
                else:
                    handles.append(module.register_forward_hook(_grab(captured, layer, False)))
            logits = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        return logits, captured


def _grab(store: dict[str, torch.Tensor], layer: str, use_input: bool) -> Any:
    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        store[layer] = inputs[0] if use_input else output

    return hook


def _pooled(extractor: Extractor, pool: int | None) -> Extractor:
    """Average-pool 4-D features to ``pool × pool`` (the paper's subsampling), when asked."""
    if pool is None:
        return extractor

    def extract(
        x: torch.Tensor, layers: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, features = extractor(x, layers)
        return logits, {
            k: F.adaptive_avg_pool2d(v, pool) if v.ndim == 4 and v.shape[-1] > pool else v
            for k, v in features.items()
        }

    return extract


def _splits(
    data: ImageDataset | Mapping[str, Any] | tuple[torch.Tensor, torch.Tensor],
) -> dict[str, Split]:
    if isinstance(data, ImageDataset):
        return {"train": data.train, "test": data.test}
    if isinstance(data, tuple):
        data = {"train": data}
    splits = {}
    for name, value in data.items():
        if name not in SPLITS:
            raise UsageError(f"unknown split {name!r} (use train and/or test)")
        if isinstance(value, Split):
            splits[name] = value
            continue
        x, y = value
        if x.dtype != torch.uint8 and (x.min() < 0 or x.max() > 1):
            raise UsageError("float inputs must be pixels in [0, 1] (normalise inside the model)")
        splits[name] = Split(x, y.long())
    return splits


def measure(
    model: nn.Module,
    data: ImageDataset | Mapping[str, Any] | tuple[torch.Tensor, torch.Tensor],
    **options: Any,
) -> pd.DataFrame:
    """The tidy metrics table of ``model`` on ``data`` (see :func:`measure_tables`)."""
    return measure_tables(model, data, **options)[0]


def measure_tables(
    model: nn.Module,
    data: ImageDataset | Mapping[str, Any] | tuple[torch.Tensor, torch.Tensor],
    *,
    layers: Sequence[str] = (PENULTIMATE,),
    views: Sequence[str] = ("clean", "pgd"),
    attack: AttackSettings | None = None,
    num_classes: int | None = None,
    classifier: str | None = None,
    batch_size: int = 512,
    pool: int | None = None,
    device: str | torch.device | None = None,
    epoch: int = 0,
    seed: int = 0,
    train_adv: PerturbedSet | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tidy metrics table of ``model`` on ``data`` and its Figure 7 statistics table.

    ``data`` is an ImageDataset, a mapping ``{"train": (x, y), "test": (x, y)}`` of tensors
    (uint8 images or float pixels in [0,1]), or one ``(x, y)`` pair measured as ``train``.
    The reference of the NCC and simplex metrics is the clean ``train`` split's class means,
    so a ``train`` split is required. The model's mode is restored afterwards.

    Inside a torch.distributed process group (``torchrun``) every process measures its share
    of each split and the sums all-reduce: every process returns the one-process tables.
    """
    attack = attack or AttackSettings()
    splits = _splits(data)
    if "train" not in splits:
        raise UsageError("measure needs a 'train' split: its clean class means are the reference")
    for view in views:
        if view.partition("@")[0] not in VIEWS:
            raise UsageError(f"unknown view {view!r} (known: {', '.join(VIEWS)})")
    if batch_size < 1:
        raise UsageError("batch_size must be >= 1")
    if pool is not None and pool < 1:
        raise UsageError("pool must be >= 1")
    target = resolve_device(str(device)) if device is not None else next(model.parameters()).device
    extractor: Extractor
    if isinstance(model, TappedClassifier):
        available = model.layers()
        chosen = available if list(layers) == ["all"] else list(layers)
        unknown = [layer for layer in chosen if layer not in available]
        if unknown:
            raise UsageError(f"unknown layer(s) {unknown} (available: {', '.join(available)})")
        linear = model.classifier
        extractor = tapped_extractor(model)
    else:
        hooked = HookedExtractor(model, classifier)
        chosen = hooked.resolve(layers)
        linear = hooked.classifier
        extractor = hooked
    classes = num_classes or linear.out_features
    plan = probe_plan(views, list(splits))
    model.to(target)
    prober = Prober(
        model,
        _pooled(extractor, pool),
        ProbeSpec(
            plan=plan,
            layers=chosen,
            norm=attack.norm,
            eps=attack.eps,
            alpha=attack.alpha,
            steps=attack.steps,
            gaussian_std=attack.gaussian_std,
            batch_size=batch_size,
            seed=seed,
            precision=attack.precision,
            head_layer=PENULTIMATE,
        ),
        classes,
        linear.weight,
        linear.bias,
        target,
        shard=(distributed.current().rank, distributed.current().world_size),
    )
    result = prober.run({k: v.to(target) for k, v in splits.items()}, epoch, train_adv)
    metrics = pd.DataFrame(result.metrics, columns=list(METRIC_COLUMNS))
    return metrics, pd.DataFrame(result.stats, columns=list(STATS_COLUMNS))
