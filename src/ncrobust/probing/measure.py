"""Measure any model on any data: accuracy, loss and NC of clean and perturbed views, per layer.

:func:`measure` takes any ``torch.nn.Module`` (taps by module name through hooks, see
:mod:`ncrobust.probing.taps`) or an ncrobust model (its own taps), and data as tensors, numpy
arrays, an :class:`~ncrobust.data.ImageDataset`, Datasets or DataLoaders (see
:mod:`ncrobust.probing.sources`), and returns the same tidy table as training
(``epoch, split, view, layer, metric, value``), computed by the same probes. Features are exact
at full resolution by default; ``pool`` average-pools feature maps for comparison with the
paper's subsampling. Everything is checked on one example batch before any measurement.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Literal, overload

import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ncrobust import distributed
from ncrobust.attacks.validation import (
    NORMS,
    Bound,
    Bounds,
    check_bounds,
    check_eps_range,
)
from ncrobust.data import ImageDataset, to_pixels
from ncrobust.errors import UsageError
from ncrobust.models import TappedClassifier
from ncrobust.probing.engine import Extractor, PerturbedSet, Prober, ProbeSpec, tapped_extractor
from ncrobust.probing.missing_classes import WEIGHT_METRICS
from ncrobust.probing.sources import MeasureSplit, as_splits
from ncrobust.probing.taps import (
    HookedExtractor,
    Trace,
    depth_order,
    first_tensor,
    head_weight,
    parse_tap,
    pool_features,
    resolve_taps,
    tap_shape,
    trace,
)
from ncrobust.runs.tables import METRIC_COLUMNS, STATS_COLUMNS
from ncrobust.runtime import PRECISIONS, eval_mode, resolve_device
from ncrobust.views import OUTPUT_LAYER, PENULTIMATE, parse_view, probe_plan, view_radii

MISSING_COLUMNS = ("epoch", "split", "view", "layer", "metric", "reason")
Output = int | str | Callable[[Any], Tensor] | None
Transform = Callable[[Tensor], Tensor] | nn.Module | None


@dataclass(frozen=True)
class AttackSettings:
    """The threat model of the perturbed views (defaults: the paper's CIFAR l_inf), in the
    inputs' own units."""

    norm: str = "linf"
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    gaussian_std: float = 8 / 255
    precision: str = "fp32"

    def check(self) -> None:
        """Refuse an unknown norm or precision and non-positive budgets."""
        if self.norm not in NORMS:
            raise UsageError(f"unknown norm {self.norm!r} (known: {', '.join(NORMS)})")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r} (fp32 or bf16)")
        for name in ("eps", "alpha", "gaussian_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"attack {name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise UsageError(f"attack {name} must be finite and >= 0, got {value!r}")
        if self.alpha <= 0:
            raise UsageError(f"attack alpha must be > 0, got {self.alpha}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise UsageError(f"attack steps must be an integer >= 1, got {self.steps!r}")


class Normalize(nn.Module):
    """(x − mean) / std per channel (dimension 1), as a model trained on normalised inputs
    expects; placed before the model so attacks and bounds stay in the data's units."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Any, std: Any, sample_ndim: int) -> None:
        super().__init__()
        shape = (1, -1, *([1] * (sample_ndim - 1)))
        mean_t = torch.as_tensor(mean, dtype=torch.float64).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float64).flatten()
        if not bool(torch.isfinite(mean_t).all()) or not bool((std_t > 0).all()):
            raise UsageError("normalize: mean must be finite and std positive")
        self.register_buffer("mean", mean_t.reshape(shape).float())
        self.register_buffer("std", std_t.reshape(shape).float())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class MeasuredModel(nn.Module):
    """The model as the probes and attacks see it: inputs in data units to [N, C] logits."""

    def __init__(self, model: nn.Module, transform: Transform, output: Output) -> None:
        super().__init__()
        self.model = model
        self.transform = transform
        self.output = output
        self.training = model.training

    def forward(self, x: Tensor) -> Tensor:
        if self.transform is not None:
            x = self.transform(x)
        return pick_logits(self.model(x), self.output)


def pick_logits(out: Any, output: Output) -> Tensor:
    """The logits in a model's output: ``output`` is an index, a key/attribute or a callable;
    by default the tensor itself, the ``logits`` key/attribute or the first tensor of a tuple."""
    picked: Any
    if callable(output):
        picked = output(out)
    elif isinstance(output, bool):
        raise UsageError(f"output must be an index, a key or a callable, got {output!r}")
    elif isinstance(output, int):
        if not isinstance(out, tuple | list) or not -len(out) <= output < len(out):
            raise UsageError(f"output={output}: the model returns {_kind(out)}, not indexable")
        picked = out[output]
    elif isinstance(output, str):
        if isinstance(out, Mapping) and output in out:
            picked = out[output]
        elif hasattr(out, output):
            picked = getattr(out, output)
        else:
            raise UsageError(f"output={output!r}: the model's {_kind(out)} has no such key")
    elif isinstance(out, Tensor):
        picked = out
    elif isinstance(out, Mapping) or hasattr(out, "logits"):
        picked = out["logits"] if isinstance(out, Mapping) and "logits" in out else None
        picked = getattr(out, "logits", None) if picked is None else picked
    elif isinstance(out, tuple | list):
        picked = first_tensor(out)
    else:
        picked = first_tensor(_fields(out))
    if not isinstance(picked, Tensor):
        raise UsageError(
            f"cannot tell the logits in the model's output ({_kind(out)}): pass output= an "
            "index, a key or a callable that picks the [N, C] logits"
        )
    return picked


def _fields(out: Any) -> list[Any]:
    if is_dataclass(out) and not isinstance(out, type):
        return [getattr(out, f.name) for f in fields(out)]
    return []


def _kind(out: Any) -> str:
    if isinstance(out, Mapping):
        return f"{type(out).__name__} with keys {list(out)[:8]}"
    return type(out).__name__


def _input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's floating parameters (float32 for a model without any)."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def _transform(transform: Transform, normalize: Any, sample_ndim: int) -> Transform:
    if transform is not None and normalize is not None:
        raise UsageError("give transform or normalize, not both")
    if normalize is not None:
        if not isinstance(normalize, tuple | list) or len(normalize) != 2:
            raise UsageError(f"normalize must be a pair (mean, std), got {normalize!r}")
        return Normalize(normalize[0], normalize[1], sample_ndim)
    if transform is not None and not callable(transform):
        raise UsageError(f"transform must be callable, got {type(transform).__name__}")
    return transform


@dataclass
class _Setup:
    """What the example forward pass fixed: layers, classifier, head weights, classes."""

    extractor: Extractor
    layers: list[str]
    order: list[str]  # layers in depth order
    weight: Tensor | None
    bias: Tensor | None
    num_classes: int
    notes: list[str]


def _foreign_setup(
    measured: MeasuredModel,
    model: nn.Module,
    example: Tensor,
    layers: str | Sequence[str],
    classifier: str | None,
    num_classes: int | None,
    pool: int | None,
) -> _Setup:
    modules = dict(model.named_modules())
    record, logits = trace(model, measured, example)  # also checks the output selection
    classifier = _classifier(record, modules, classifier)
    width = logits.shape
    if len(width) != 2:
        raise UsageError(
            f"the logits must be [N, C], got shape {tuple(width)}: pass output= to pick them"
        )
    classes = _classes(num_classes, int(width[1]))
    chosen = resolve_taps(layers, record, modules, classifier)
    notes = []
    weight = bias = None
    if PENULTIMATE in chosen:
        shape = tap_shape(record, parse_tap(PENULTIMATE, classifier))
        assert shape is not None
        found = head_weight(modules[classifier], shape, classes)
        if found is None:
            notes.append(
                f"the classifier {classifier!r} ({type(modules[classifier]).__name__}) has no "
                f"{classes}×p weight matrix acting on the penultimate features: "
                f"{', '.join(WEIGHT_METRICS)} are skipped"
            )
        else:
            weight, bias = found
    _check_pool(pool, {layer: tap_shape(record, parse_tap(layer, classifier)) for layer in chosen})
    extractor = HookedExtractor(model, measured, classifier)
    order = depth_order(chosen, record, classifier)
    return _Setup(extractor, chosen, order, weight, bias, classes, notes)


def _classifier(record: Trace, modules: dict[str, nn.Module], classifier: str | None) -> str:
    if classifier is None:
        found = record.last_linear(modules)
        if found is None:
            raise UsageError(
                "no nn.Linear runs in the model's forward pass: name the module whose input is "
                "the penultimate feature with classifier='...'"
            )
        return found
    if classifier not in modules or not classifier:
        raise UsageError(f"classifier {classifier!r} is not a module of the model")
    calls = record.counts.get(classifier, 0)
    if calls != 1:
        raise UsageError(f"classifier {classifier!r} runs {calls} times per forward pass (need 1)")
    return classifier


def _classes(num_classes: int | None, width: int) -> int:
    if num_classes is None:
        return width
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise UsageError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if num_classes != width:
        raise UsageError(f"num_classes={num_classes} but the model returns {width} logits")
    return num_classes


def _tapped_setup(
    measured: MeasuredModel,
    model: TappedClassifier,
    example: Tensor,
    layers: str | Sequence[str],
    num_classes: int | None,
    pool: int | None,
) -> _Setup:
    available = model.layers()
    chosen = available if list([layers] if isinstance(layers, str) else layers) == ["all"] else None
    if chosen is None:
        chosen = [layers] if isinstance(layers, str) else list(layers)
        unknown = [layer for layer in chosen if layer not in available]
        if unknown:
            raise UsageError(f"unknown layer(s) {unknown} (available: {', '.join(available)})")
    transform = measured.transform

    def extract(x: Tensor, taps: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
        return tapped_extractor(model)(transform(x) if transform is not None else x, taps)

    with torch.no_grad():
        _, features = extract(example, chosen)
    _check_pool(pool, {k: tuple(v.shape[1:]) for k, v in features.items()})
    classes = _classes(num_classes, model.classifier.out_features)
    head = model.classifier
    order = [layer for layer in available if layer in chosen]
    return _Setup(extract, list(chosen), order, head.weight, head.bias, classes, [])


def _check_pool(pool: int | None, shapes: Mapping[str, tuple[int, ...] | None]) -> None:
    if pool is None:
        return
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise UsageError(f"pool must be an integer >= 1, got {pool!r}")
    maps = {k: s for k, s in shapes.items() if s is not None and len(s) >= 2}
    deep = {k: s for k, s in maps.items() if len(s) > 4}
    if deep:
        raise UsageError(f"pool applies to 1-D, 2-D and 3-D feature maps; got {deep}")
    if not maps:
        raise UsageError(
            f"pool={pool} averages feature maps ([N, C, L], [N, C, H, W] or [N, C, D, H, W]) "
            f"but none of the layers {list(shapes)} has one"
        )


def _pooled(extractor: Extractor, pool: int | None) -> Extractor:
    """Average-pool feature maps so that no side exceeds ``pool`` (the paper's subsampling)."""
    if pool is None:
        return extractor

    def extract(x: Tensor, layers: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
        logits, features = extractor(x, layers)
        return logits, {k: pool_features(v, pool) for k, v in features.items()}

    return extract


def _check_labels(splits: Mapping[str, MeasureSplit], num_classes: int) -> None:
    for name, split in splits.items():
        low, high = (int(v) for v in torch.aminmax(split.labels))
        if low < 0 or high >= num_classes:
            raise UsageError(
                f"split {name!r}: labels span [{low}, {high}] but must be class indices in "
                f"[0, {num_classes}) (the model has {num_classes} logits)"
            )


def _check_views(views: Sequence[str], splits: Sequence[str], norm: str) -> list[tuple[str, str]]:
    if isinstance(views, str):
        raise UsageError(f"views must be a list of view names, got the string {views!r}")
    for view in views:
        parse_view(view, norm)  # each spec checked against the threat model (its own eps too)
    return probe_plan(views, list(splits))


def _checked_box(bounds: Bounds, example: Tensor) -> tuple[Bound, Bound] | None:
    try:
        return check_bounds(bounds, example)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@overload
def measure(
    model: nn.Module,
    data: Any,
    *,
    layers: str | Sequence[str] = ...,
    views: Sequence[str] = ...,
    attack: AttackSettings | None = ...,
    bounds: Bounds = ...,
    normalize: tuple[Any, Any] | None = ...,
    transform: Transform = ...,
    output: Output = ...,
    classifier: str | None = ...,
    num_classes: int | None = ...,
    batch_size: int = ...,
    pool: int | None = ...,
    device: str | torch.device | None = ...,
    epoch: int = ...,
    seed: int = ...,
    train_adv: PerturbedSet | None = ...,
    cache_mb: int = ...,
    with_attack_stats: Literal[False] = ...,
) -> pd.DataFrame: ...


@overload
def measure(
    model: nn.Module,
    data: Any,
    *,
    layers: str | Sequence[str] = ...,
    views: Sequence[str] = ...,
    attack: AttackSettings | None = ...,
    bounds: Bounds = ...,
    normalize: tuple[Any, Any] | None = ...,
    transform: Transform = ...,
    output: Output = ...,
    classifier: str | None = ...,
    num_classes: int | None = ...,
    batch_size: int = ...,
    pool: int | None = ...,
    device: str | torch.device | None = ...,
    epoch: int = ...,
    seed: int = ...,
    train_adv: PerturbedSet | None = ...,
    cache_mb: int = ...,
    with_attack_stats: Literal[True],
) -> tuple[pd.DataFrame, pd.DataFrame]: ...


def measure(
    model: nn.Module,
    data: Any,
    *,
    layers: str | Sequence[str] = (PENULTIMATE,),
    views: Sequence[str] = ("clean", "pgd"),
    attack: AttackSettings | None = None,
    bounds: Bounds = (0.0, 1.0),
    normalize: tuple[Any, Any] | None = None,
    transform: Transform = None,
    output: Output = None,
    classifier: str | None = None,
    num_classes: int | None = None,
    batch_size: int = 512,
    pool: int | None = None,
    device: str | torch.device | None = None,
    epoch: int = 0,
    seed: int = 0,
    train_adv: PerturbedSet | None = None,
    cache_mb: int = 2048,
    with_attack_stats: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy, loss and Neural Collapse of ``model`` on ``data``, per split, view and layer.

    Returns the tidy table ``epoch, split, view, layer, metric, value`` (``layer`` an ordered
    categorical in depth order, ``output`` last for accuracy/loss/kl); with
    ``with_attack_stats=True`` also the Figure 7 statistics table. Metrics that cannot be
    computed (a class with no sample in a split; W metrics of a head without a weight matrix)
    are listed with their reason in ``table.attrs["missing"]`` (records with ``split, view,
    layer, metric, reason``) and announced by a warning.
    The clean ``train`` split's class means are the reference of the NCC and simplex metrics,
    so a ``train`` split is required. The model's train/eval mode is restored afterwards.

    Args:
        model: any ``nn.Module`` mapping inputs to logits (or to a tuple/dict/dataclass holding
            them, see ``output``), or an ncrobust model (its own taps).
        data: one split ``(x, y)`` / Dataset / DataLoader (measured as ``train``), a mapping
            ``{"train": ..., "test": ...}`` of them, or an ImageDataset. x: torch tensor or
            numpy array of any sample shape ([N, D], [N, C, L], [N, C, H, W], ...), uint8
            pixels (read as x / 255) or float16/bfloat16/float32/float64; y: integer labels
            [N] (or [N, 1]) as a tensor, array or list. Datasets and DataLoaders (fixed order,
            yielding ``(x, y)``) are streamed in batches; the perturbed views keep their
            perturbed inputs (N × sample) on the device so both NC passes see the same data.
        layers: tap names in any order: module names (their output), ``name:input``,
            ``name#k`` (the k-th call of a module run several times), ``penultimate`` (the
            classifier's input), or ``"all"`` (every leaf module producing a tensor, in
            execution order; see :func:`list_layers`).
        views: ``clean``, ``pgd``, ``gaussian``, ``targeted`` (and ``train_adv`` with
            ``train_adv``); ``VIEW@split`` limits a view to one split. ``ncc_adaptive``
            attacks each layer's nearest-class-mean rule itself (one PGD per layer) and
            records that layer's ``ncc_accuracy`` and ``ncc_match`` under it.
        attack: the threat model (norm, eps, alpha, steps, gaussian_std, precision) in the
            inputs' own units; default the paper's l_inf 8/255.
        bounds: the input box ``(lo, hi)`` the data lie in and attacks and noise are clamped
            to: numbers, or tensors with one value per channel (dimension 1) or per input
            element; ``None`` for an unbounded input space. Default [0, 1] (pixels).
        normalize: ``(mean, std)`` per channel applied before the model (a model trained on
            normalised inputs); attacks, eps and bounds stay in the data's units.
        transform: any callable applied to the inputs before the model (instead of
            ``normalize``), differentiable for the attacks.
        output: how to find the logits in the model's output: an index, a key/attribute name
            or a callable; default the tensor itself, the ``logits`` key or attribute, or the
            first tensor of a tuple.
        classifier: the module whose input is ``penultimate`` and whose weight gives the W
            metrics (NC3, W-based NC2): default the last ``nn.Linear`` executed. A head without
            a C×p weight matrix (e.g. a 1×1 conv before pooling) skips the W metrics.
        num_classes: C; default the width of the logits (a different value is refused).
        batch_size: rows per forward pass (also the batch of a Dataset).
        pool: average-pool 1-D/2-D/3-D feature maps so no side exceeds ``pool`` (the paper's
            subsampling); vectors are left as they are. Default: exact, full resolution.
        device: where to measure; default the model's device.
        epoch: the value of the ``epoch`` column.
        seed: seed of the attacks' random starts and of the noise.
        train_adv: inputs perturbed during training, for the ``train_adv`` view.
        cache_mb: features are kept between the two NC passes when they fit in this many MiB
            (recomputed otherwise).
        with_attack_stats: also return the Figure 7 statistics table.

    Inside a torch.distributed process group (``torchrun``) every process measures its share
    of each split and the sums all-reduce: every process returns the one-process tables.
    """
    modes = [(module, module.training) for module in model.modules()]
    with _restored(modes):
        metrics, stats, missing, notes = _run(
            model,
            data,
            layers=layers,
            views=views,
            attack=attack or AttackSettings(),
            bounds=bounds,
            normalize=normalize,
            transform=transform,
            output=output,
            classifier=classifier,
            num_classes=num_classes,
            batch_size=batch_size,
            pool=pool,
            device=device,
            epoch=epoch,
            seed=seed,
            train_adv=train_adv,
            cache_mb=cache_mb,
        )
    metrics.attrs["missing"] = missing.astype({"layer": str}).to_dict("records")
    metrics.attrs["notes"] = notes
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    if len(missing):
        reasons = "; ".join(dict.fromkeys(missing.reason))
        warnings.warn(
            f"{len(missing)} metric value(s) not computed ({reasons}); see table.attrs['missing']",
            UserWarning,
            stacklevel=2,
        )
    return (metrics, stats) if with_attack_stats else metrics


def measure_tables(
    model: nn.Module, data: Any, **options: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``measure(model, data, ..., with_attack_stats=True)``: the metrics and the Figure 7
    statistics tables; the options are :func:`measure`'s (its signature is shown here)."""
    return measure(model, data, **options, with_attack_stats=True)


measure_tables.__signature__ = inspect.signature(measure).replace(  # type: ignore[attr-defined]
    parameters=[
        p
        for name, p in inspect.signature(measure).parameters.items()
        if name != "with_attack_stats"
    ],
    return_annotation="tuple[pd.DataFrame, pd.DataFrame]",
)


def _run(
    model: nn.Module,
    data: Any,
    *,
    layers: str | Sequence[str],
    views: Sequence[str],
    attack: AttackSettings,
    bounds: Bounds,
    normalize: tuple[Any, Any] | None,
    transform: Transform,
    output: Output,
    classifier: str | None,
    num_classes: int | None,
    batch_size: int,
    pool: int | None,
    device: str | torch.device | None,
    epoch: int,
    seed: int,
    train_adv: PerturbedSet | None,
    cache_mb: int,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    if not isinstance(model, nn.Module):
        raise UsageError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(attack, AttackSettings):
        raise UsageError(f"attack must be an AttackSettings, got {type(attack).__name__}")
    attack.check()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(cache_mb, bool) or not isinstance(cache_mb, int) or cache_mb < 0:
        raise UsageError(f"cache_mb must be an integer >= 0, got {cache_mb!r}")
    if isinstance(model, TappedClassifier) and (output is not None or classifier is not None):
        raise UsageError(
            "output= and classifier= are for foreign models; an ncrobust model has both"
        )
    parameter = next(iter(model.parameters()), None)
    target = (
        resolve_device(str(device))
        if device is not None
        else (parameter.device if parameter is not None else torch.device("cpu"))
    )
    dtype = _input_dtype(model)
    probe = _first_example(data)
    box = _checked_box(bounds, probe)
    splits = as_splits(data, box=box, dtype=dtype, batch_size=batch_size)
    if "train" not in splits:
        raise UsageError("measure needs a 'train' split: its clean class means are the reference")
    plan = _check_views(views, list(splits), attack.norm)
    radii = view_radii(views)
    if radii and attack.eps <= 0:
        raise UsageError("views with their own eps scale the step by eps: attack.eps must be > 0")
    notes = _dataset_note(data, model, normalize, transform)
    splits = {name: split.to(target) for name, split in splits.items()}
    train = splits["train"]
    example = to_pixels(train.images[0 : min(2, len(train))], target, dtype)
    box = _checked_box(bounds, example)
    try:
        check_eps_range(attack.norm, attack.eps, box, example, "attack eps")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if box is not None and attack.alpha > 0 and attack.norm == "linf":
        try:
            check_eps_range("linf", attack.alpha, box, example, "attack alpha")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    measured = MeasuredModel(model, _transform(transform, normalize, example.ndim - 1), output)
    measured.to(target)
    with eval_mode(measured):
        if isinstance(model, TappedClassifier):
            setup = _tapped_setup(measured, model, example, layers, num_classes, pool)
        else:
            setup = _foreign_setup(measured, model, example, layers, classifier, num_classes, pool)
    _check_labels(splits, setup.num_classes)
    prober = Prober(
        measured,
        _pooled(setup.extractor, pool),
        ProbeSpec.for_threat(
            attack,
            plan,
            setup.layers,
            batch_size=batch_size,
            cache_bytes=cache_mb << 20,
            seed=seed,
            head_layer=PENULTIMATE,
            bounds=box,
            input_dtype=dtype,
            radii=radii,
        ),
        setup.num_classes,
        setup.weight,
        setup.bias,
        target,
        shard=(distributed.current().rank, distributed.current().world_size),
    )
    result = prober.run(splits, epoch, train_adv)  # type: ignore[arg-type]
    missing_rows = list(result.missing)
    if setup.weight is None and PENULTIMATE in setup.layers:
        missing_rows += [
            dict(zip(MISSING_COLUMNS, (epoch, s, v, PENULTIMATE, m, setup.notes[0]), strict=True))
            for s, v in plan
            for m in WEIGHT_METRICS
        ]
    categories = [*setup.order, OUTPUT_LAYER]
    metrics = _layered(pd.DataFrame(result.metrics, columns=list(METRIC_COLUMNS)), categories)
    stats = _layered(pd.DataFrame(result.stats, columns=list(STATS_COLUMNS)), categories)
    missing = _layered(pd.DataFrame(missing_rows, columns=list(MISSING_COLUMNS)), categories)
    return metrics, stats, missing, notes


@contextmanager
def _restored(modes: list[tuple[nn.Module, bool]]) -> Iterator[None]:
    """Give every module its own train/eval mode back, also where the caller mixed them."""
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _layered(frame: pd.DataFrame, categories: list[str]) -> pd.DataFrame:
    """The ``layer`` column as an ordered categorical in depth order."""
    frame["layer"] = pd.Categorical(frame["layer"], categories=categories, ordered=True)
    return frame


def _first_example(data: Any) -> Tensor:
    """A small float tensor with the data's sample shape, to shape tensor bounds early."""
    value = data.train if isinstance(data, ImageDataset) else data
    if isinstance(value, Mapping):
        value = value.get("train", next(iter(value.values()), None))
    if hasattr(value, "images"):
        value = (value.images, value.labels)
    if isinstance(value, Dataset):
        sample = value[0][0]
        sample = torch.as_tensor(sample) if not isinstance(sample, Tensor) else sample
        value = (sample[None], None)
    elif isinstance(value, DataLoader):
        batch = next(iter(value))
        value = (batch[0] if isinstance(batch, tuple | list) else None, None)
    if isinstance(value, tuple | list) and len(value) == 2:
        x = value[0]
        x = torch.from_numpy(x) if not isinstance(x, Tensor) and hasattr(x, "dtype") else x
        if isinstance(x, Tensor) and x.ndim >= 2 and x.shape[0]:
            return x[:1].float()
    return torch.zeros(1, 1)


def _dataset_note(data: Any, model: nn.Module, normalize: Any, transform: Any) -> list[str]:
    """An ImageDataset's mean/std are not applied to a foreign model: say so when they matter."""
    if not isinstance(data, ImageDataset) or isinstance(model, TappedClassifier):
        return []
    if normalize is not None or transform is not None:
        return []
    if all(m == 0 for m in data.mean) and all(s == 1 for s in data.std):
        return []
    return [
        f"the {data.name} dataset's mean/std are not applied to this model's inputs; pass "
        "normalize=(data.mean, data.std) if the model expects normalised inputs"
    ]


def list_layers(
    model: nn.Module,
    example_input: Tensor,
    *,
    normalize: tuple[Any, Any] | None = None,
    transform: Transform = None,
    output: Output = None,
    classifier: str | None = None,
) -> pd.DataFrame:
    """The tap names of ``model`` (what ``layers="all"`` measures), in execution order, with the
    module type, the per-sample output shape and p (the flattened width), from one forward pass
    on ``example_input`` (a batch in the data's units; uint8 is read as x / 255)."""
    if not isinstance(example_input, Tensor) or example_input.ndim < 2:
        raise UsageError("example_input must be a batch tensor [N, ...]")
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    x = to_pixels(example_input[:2], device, _input_dtype(model))
    measured = MeasuredModel(model, _transform(transform, normalize, x.ndim - 1), output)
    measured.to(device)
    rows: list[tuple[str, str, tuple[int, ...] | None]] = []
    modes = [(module, module.training) for module in model.modules()]
    with _restored(modes), eval_mode(measured), torch.no_grad():
        if isinstance(model, TappedClassifier):
            given = measured.transform(x) if measured.transform is not None else x
            _, features = tapped_extractor(model)(given, model.layers())
            for name, value in features.items():
                kind = type(model.stages[name]).__name__
                rows.append((name, kind, tuple(value.shape[1:])))
        else:
            modules = dict(model.named_modules())
            record, _ = trace(model, measured, x)
            head = _classifier(record, modules, classifier)
            for name in resolve_taps("all", record, modules, head):
                tap = parse_tap(name, head)
                shape = tap_shape(record, tap)
                kind = type(modules[tap.module]).__name__
                rows.append((name, f"input of {head}" if name == PENULTIMATE else kind, shape))
    return pd.DataFrame(
        [(n, k, s, math.prod(s or ())) for n, k, s in rows],
        columns=["layer", "module", "shape", "p"],
    )
