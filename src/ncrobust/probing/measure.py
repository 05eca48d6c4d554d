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
from ncrobust.probing.engine import (
    PERTURBED_VIEWS,
    Extractor,
    PerturbedSet,
    Prober,
    ProbeSpec,
    tapped_extractor,
)
from ncrobust.probing.missing_classes import WEIGHT_METRICS
from ncrobust.probing.sources import MeasureSplit, SampleKeys, as_splits, pair
from ncrobust.probing.taps import (
    Call,
    HookedExtractor,
    Trace,
    depth_order,
    head_weight,
    logits_source,
    parse_tap,
    pool_features,
    resolve_taps,
    tap_shape,
    trace,
)
from ncrobust.runs.tables import METRIC_COLUMNS, STATS_COLUMNS
from ncrobust.runtime import PRECISIONS, eval_mode, resolve_device
from ncrobust.views import (
    OUTPUT_LAYER,
    PENULTIMATE,
    parse_view,
    probe_plan,
    view_kind,
    view_radii,
)

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
        return pick_logits(self.raw(x), self.output)

    def raw(self, x: Tensor) -> Any:
        """The model's own output (a tensor, tuple, dict or output object) on ``x``."""
        return self.model(self.transform(x) if self.transform is not None else x)


def resolve_output(out: Any, output: Output, classes: int | None, rows: int) -> Output:
    """How to pick the logits from the model's output ``out`` on an example batch: ``output``
    itself when given; else the tensor, the ``logits`` key/attribute, or the one element of a
    tuple/list/dict/dataclass shaped [N, C] (N = ``rows``; C = ``classes``, the classes in the
    labels; any C when None). Several or no such element is refused, naming the elements."""
    if output is not None or isinstance(out, Tensor):
        return output
    if (isinstance(out, Mapping) and "logits" in out) or (
        not isinstance(out, Mapping) and hasattr(out, "logits")
    ):
        return "logits"
    items: list[tuple[int | str, Any]]
    if isinstance(out, tuple | list):
        items = list(enumerate(out))
    elif isinstance(out, Mapping):
        items = list(out.items())
    else:
        items = [(k, v) for k, v in _fields(out)]
    shapes = {k: tuple(v.shape) for k, v in items if isinstance(v, Tensor)}
    fits = [
        k
        for k, shape in shapes.items()
        if len(shape) == 2 and shape[0] == rows and (classes is None or shape[1] == classes)
    ]
    if len(fits) == 1 and all(isinstance(k, int | str) for k in fits):
        return fits[0]
    wanted = f"[N, {classes}] for the {classes} classes of the labels" if classes else "[N, C]"
    described = ", ".join(f"{k!r}: {list(v)}" for k, v in shapes.items()) or "no tensor"
    raise UsageError(
        f"cannot tell the logits in the model's {_kind(out)} ({described}): "
        f"{'several' if fits else 'no'} element(s) shaped {wanted}; pass output= the index or "
        "key of the logits (or a callable that returns them)"
    )


def pick_logits(out: Any, output: Output) -> Tensor:
    """The logits in a model's output: ``output`` is an index, a key/attribute or a callable
    (see :func:`resolve_output`); by default the tensor itself or the ``logits`` key/attribute."""
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
    else:
        picked = None
    if not isinstance(picked, Tensor):
        raise UsageError(
            f"cannot tell the logits in the model's output ({_kind(out)}): pass output= an "
            "index, a key or a callable that picks the [N, C] logits"
        )
    return picked


def _fields(out: Any) -> list[tuple[str, Any]]:
    if is_dataclass(out) and not isinstance(out, type):
        return [(f.name, getattr(out, f.name)) for f in fields(out)]
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
    notes: list[str]  # said to the user (warnings, table.attrs["notes"])
    skipped: str = ""  # why the W metrics are skipped (a head without a C×p weight)


def _foreign_setup(
    measured: MeasuredModel,
    model: nn.Module,
    example: Tensor,
    layers: str | Sequence[str],
    classifier: str | None,
    num_classes: int | None,
    pool: int | None,
    label_classes: int | None,
) -> _Setup:
    modules = dict(model.named_modules())
    record, logits = _traced(model, measured, example, label_classes)
    width = logits.shape
    classes = _classes(num_classes, int(width[1]))
    given = classifier
    classifier = _classifier(record, modules, classifier, logits, _wants_head(layers))
    chosen = resolve_taps(layers, record, modules, classifier)
    notes, skipped = [], ""
    weight = bias = None
    if PENULTIMATE in chosen:
        shape = tap_shape(record, parse_tap(PENULTIMATE, classifier))
        assert shape is not None
        found = head_weight(modules[classifier], shape, classes)
        if found is None:
            skipped = (
                f"the classifier {classifier!r} ({type(modules[classifier]).__name__}) has no "
                f"{classes}×p weight matrix acting on the penultimate features: "
                f"{', '.join(WEIGHT_METRICS)} are skipped"
            )
        else:
            weight, bias = found
    source = logits_source(record, logits)
    if given is None and PENULTIMATE in chosen and source is not None and not source[1]:
        notes.append(
            f"the logits are computed outside the model's modules; {classifier!r}, the last "
            "module whose output has their shape, is taken as the classifier (pass "
            "classifier= to name another)"
        )
    _check_pool(pool, {layer: tap_shape(record, parse_tap(layer, classifier)) for layer in chosen})
    extractor = HookedExtractor(model, measured, classifier)
    order = depth_order(chosen, record, classifier)
    return _Setup(extractor, chosen, order, weight, bias, classes, notes, skipped)


def _traced(
    model: nn.Module, measured: MeasuredModel, example: Tensor, classes: int | None
) -> tuple[Trace, Tensor]:
    """One traced forward pass; fixes how the logits are picked from the output (see
    :func:`resolve_output`) and checks that they are [N, C]."""
    failures = (RuntimeError, TypeError, IndexError, KeyError, AttributeError, ValueError)
    try:
        record, out = trace(model, measured.raw, example)
        measured.output = resolve_output(out, measured.output, classes, int(example.shape[0]))
        logits = pick_logits(out, measured.output)
    except UsageError:
        raise
    except failures as exc:
        hint = (
            "; integer inputs other than uint8 images reach the model untouched: convert x to "
            "the dtype the model expects (x.float(), x.long())"
            if not example.is_floating_point()
            else ""
        )
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"the model (or output=) fails on an example batch ({example.dtype}, shape "
            f"{tuple(example.shape)}): {type(exc).__name__}: {first}{hint}"
        ) from exc
    if logits.ndim != 2 or logits.shape[0] != example.shape[0]:
        raise UsageError(
            f"the logits must be [N, C], got shape {tuple(logits.shape)} for a batch of "
            f"{example.shape[0]}: pass output= to pick them"
        )
    return record, logits


def _wants_head(layers: str | Sequence[str]) -> bool:
    """Whether the taps need the classifier (``penultimate``, also in ``"all"``)."""
    names = [layers] if isinstance(layers, str) else list(layers)
    return PENULTIMATE in names or names == ["all"]


def _classifier(
    record: Trace,
    modules: dict[str, nn.Module],
    classifier: str | None,
    logits: Tensor,
    needed: bool = True,
) -> str:
    """The classifier: ``classifier`` when given, else the module that produced the logits
    (:func:`logits_source`) when it has a C×p weight on its input. Where that fails or is
    ambiguous and ``penultimate`` is ``needed``, refuse naming the candidates."""
    if classifier is None:
        classes = int(logits.shape[1])
        found = logits_source(record, logits)
        problem = _head_problem(record, modules, found, classes)
        if problem is None or not needed:
            return found[0].module if found is not None else ""
        weighted = [
            name
            for name in dict.fromkeys(c.module for c in record.calls)
            if _weight_rows(modules[name]) == classes
        ]
        listed = ", ".join(repr(n) for n in weighted) or "none"
        raise UsageError(
            f"{problem}: pass classifier= the module whose input is the penultimate feature "
            f"(modules with a {classes}-row weight: {listed}), or layers= without 'penultimate'"
        )
    if classifier not in modules or not classifier:
        raise UsageError(f"classifier {classifier!r} is not a module of the model")
    calls = record.counts.get(classifier, 0)
    if calls != 1:
        raise UsageError(f"classifier {classifier!r} runs {calls} times per forward pass (need 1)")
    return classifier


def _head_problem(
    record: Trace, modules: dict[str, nn.Module], found: tuple[Call, bool] | None, classes: int
) -> str | None:
    """Why the module that produced the logits cannot serve as the classifier (None if it can)."""
    if found is None:
        return f"no module of the model outputs the [N, {classes}] logits"
    call, exact = found
    name, kind = call.module, call.kind
    if not exact:
        heads = {
            c.module
            for c in record.calls
            if c.output_shape == call.output_shape
            and c.input_shape is not None
            and head_weight(modules[c.module], c.input_shape, classes) is not None
        }
        if len(heads) > 1:
            return (
                f"the logits are computed outside the modules and several modules output "
                f"their shape ({', '.join(sorted(heads))}): the classifier is ambiguous"
            )
    if record.counts[name] != 1:
        return f"the logits come from {name!r} ({kind}), which runs {record.counts[name]} times"
    if call.input_shape is None or head_weight(modules[name], call.input_shape, classes) is None:
        return (
            f"the logits come from {name!r} ({kind}), which has no {classes}×p weight acting on "
            "its input"
        )
    return None


def _weight_rows(module: nn.Module) -> int | None:
    weight = getattr(module, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, Tensor) and weight.ndim >= 2 else None


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
    input_key: str | None = ...,
    label_key: str | None = ...,
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
    input_key: str | None = ...,
    label_key: str | None = ...,
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
    input_key: str | None = None,
    label_key: str | None = None,
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
    layer, metric, reason``) and announced by a warning. ``table.attrs["per_class"]`` holds the
    per-class detail of every NC measurement (records with ``epoch, split, view, layer, class,
    metric, value``; see :meth:`~ncrobust.collapse.CollapseAccumulator.per_class`):
    ``pd.DataFrame(table.attrs["per_class"])``.
    The clean ``train`` split's class means are the reference of the NCC and simplex metrics,
    so a ``train`` split is required. The model's train/eval mode is restored afterwards.

    Args:
        model: any ``nn.Module`` mapping inputs to logits (or to a tuple/dict/dataclass holding
            them, see ``output``), or an ncrobust model (its own taps).
        data: one split ``(x, y)`` / Dataset / DataLoader (measured as ``train``), a mapping
            ``{"train": ..., "test": ...}`` of them, or an ImageDataset. x: torch tensor or
            numpy array of any sample shape ([N, D], [N, C, L], [N, C, H, W], ...):
            float16/bfloat16/float32/float64, uint8 images [N, C, H, W] / [N, H, W] (read as
            pixels x / 255), or other integers such as token ids (passed to the model untouched;
            clean views only); y: integer labels [N] (or [N, 1]) as a tensor, array or list.
            Datasets and DataLoaders (fixed order, yielding ``(x, y)`` or dicts with an input
            key such as ``image``/``input_ids`` and a label key such as ``label``; no dropped
            last batch) are streamed in batches; the perturbed views keep their perturbed
            inputs (N × sample) on the device so both NC passes see the same data.
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
            one element of a tuple/dict/dataclass shaped [N, C] for the C classes of the labels
            (none or several such elements are refused, naming them).
        classifier: the module whose input is ``penultimate`` and whose weight gives the W
            metrics (NC3, W-based NC2). Default: found from the logits, as the module whose
            output is the logits tensor (else the last one whose output has their shape),
            which must have a C×p weight on its input; an ambiguous case is refused with the
            candidates. A normalised (cosine) classifier such as ``s · normalize(h) @
            normalize(W).T`` is found this way: its input is measured and its ``weight`` gives
            the W metrics. A head given here without a C×p weight matrix (e.g. a 1×1 conv
            before pooling) skips the W metrics.
        input_key: the key of the input in dict samples of a Dataset/DataLoader; default the
            first present of ``input``, ``inputs``, ``x``, ``image``, ``images``,
            ``pixel_values``, ``input_ids``.
        label_key: the key of the label in dict samples; default the first present of
            ``label``, ``labels``, ``y``, ``target``, ``targets``.
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
            keys=SampleKeys(input_key, label_key),
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
    keys: SampleKeys,
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
    probe = _first_example(data, keys)
    box = _checked_box(bounds, probe)
    splits = as_splits(data, box=box, dtype=dtype, batch_size=batch_size, keys=keys)
    if "train" not in splits:
        raise UsageError("measure needs a 'train' split: its clean class means are the reference")
    label_classes = (
        num_classes
        if isinstance(num_classes, int) and not isinstance(num_classes, bool)
        else max(int(split.labels.max()) for split in splits.values()) + 1
    )
    plan = _check_views(views, list(splits), attack.norm)
    radii = view_radii(views)
    if radii and attack.eps <= 0:
        raise UsageError("views with their own eps scale the step by eps: attack.eps must be > 0")
    notes = _dataset_note(data, model, normalize, transform)
    splits = {name: split.to(target) for name, split in splits.items()}
    train = splits["train"]
    example = to_pixels(train.images[0 : min(2, len(train))], target, dtype)
    perturbed = [v for _, v in plan if view_kind(v) in PERTURBED_VIEWS]
    if not example.is_floating_point() and normalize is not None:
        raise UsageError(
            f"normalize= applies to real-valued inputs, but the inputs are integers "
            f"({example.dtype}): leave it out, or pass transform= a callable that maps them"
        )
    if not example.is_floating_point() and (perturbed or train_adv is not None):
        raise UsageError(
            f"the inputs are integers ({example.dtype}, samples {tuple(example.shape[1:])}, e.g. "
            f"token ids) and cannot be perturbed for the views {perturbed or ['train_adv']}: "
            "pass views=['clean'] (uint8 images [N, C, H, W] / [N, H, W] are read as x / 255)"
        )
    box = _checked_box(bounds, example)
    if box is None and perturbed:
        _check_unbounded_eps(attack, train.images if isinstance(train.images, Tensor) else example)
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
            setup = _foreign_setup(
                measured, model, example, layers, classifier, num_classes, pool, label_classes
            )
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
            per_class=True,
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
            dict(zip(MISSING_COLUMNS, (epoch, s, v, PENULTIMATE, m, setup.skipped), strict=True))
            for s, v in plan
            for m in WEIGHT_METRICS
        ]
    categories = [*setup.order, OUTPUT_LAYER]
    metrics = _layered(pd.DataFrame(result.metrics, columns=list(METRIC_COLUMNS)), categories)
    stats = _layered(pd.DataFrame(result.stats, columns=list(STATS_COLUMNS)), categories)
    missing = _layered(pd.DataFrame(missing_rows, columns=list(MISSING_COLUMNS)), categories)
    metrics.attrs["per_class"] = (
        pd.concat(result.per_class, ignore_index=True).to_dict("records")
        if result.per_class
        else []
    )
    return metrics, stats, missing, [*notes, *setup.notes]


def _check_unbounded_eps(attack: AttackSettings, inputs: Tensor) -> None:
    """Without bounds, refuse an attack radius beyond the whole spread of the train inputs
    (l_2: times sqrt(d)): almost always a 0–255 value such as eps=8 given for [0, 1] data."""
    low, high = (float(v) for v in torch.aminmax(inputs.detach().float()))
    spread = high - low
    d = math.prod(inputs.shape[1:])
    limit = spread if attack.norm == "linf" else spread * math.sqrt(d)
    if attack.eps > limit:
        raise UsageError(
            f"attack eps={attack.eps:g} is larger than the whole spread of the train inputs for "
            f"{attack.norm} ({limit:g}; inputs in [{low:g}, {high:g}], bounds=None): eps is in "
            f"the inputs' own units (for pixel levels write {attack.eps:g}/255)"
        )


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


def _first_example(data: Any, keys: SampleKeys) -> Tensor:
    """A small float tensor with the data's sample shape, to shape tensor bounds early."""
    value = data.train if isinstance(data, ImageDataset) else data
    if isinstance(value, Mapping):
        value = value.get("train", next(iter(value.values()), None))
    if hasattr(value, "images"):
        value = (value.images, value.labels)
    if isinstance(value, Dataset):
        sample = pair("train", value[0], keys)[0]
        sample = torch.as_tensor(sample) if not isinstance(sample, Tensor) else sample
        value = (sample[None], None)
    elif isinstance(value, DataLoader):
        value = (pair("train", next(iter(value)), keys)[0], None)
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
    on ``example_input`` (a batch in the data's units; uint8 images are read as x / 255). The
    classifier (whose input is ``penultimate``) is found from the logits as in :func:`measure`."""
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
            record, logits = _traced(model, measured, x, None)
            head = _classifier(record, modules, classifier, logits)
            for name in resolve_taps("all", record, modules, head):
                tap = parse_tap(name, head)
                shape = tap_shape(record, tap)
                kind = type(modules[tap.module]).__name__
                rows.append((name, f"input of {head}" if name == PENULTIMATE else kind, shape))
    return pd.DataFrame(
        [(n, k, s, math.prod(s or ())) for n, k, s in rows],
        columns=["layer", "module", "shape", "p"],
    )
