"""Measurement ("probes"): accuracy, loss and Neural Collapse of views of a split, per layer.

A view is a version of a split's inputs: ``clean``; ``pgd`` (fresh untargeted PGD against the
evaluated model); ``targeted`` (PGD towards (y + 1) mod C, whose NC is grouped by the target
label as the paper does); ``gaussian`` (x + std * N(0, I)); ``train_adv`` (the perturbed inputs
the epoch's own training used, handed in by the trainer). Every view runs in eval mode with
large batches; one forward pass serves all requested layers; perturbed inputs are made once
and cached so both NC passes see the same data; features are cached between the passes when
they fit in ``cache_bytes`` and recomputed otherwise. The clean train set's class means of each
layer are the reference of the NCC and simplex metrics of every other view. A view whose labels
miss a class keeps its accuracy, loss and NCC against the reference; the metrics that need every
class are listed with the reason in ``ProbeResult.missing``. Perturbed views are clamped to
``ProbeSpec.bounds`` ([0, 1] pixels unless set).
The ``ncc_adaptive`` view attacks, per layer, that layer's differentiable nearest-class-mean rule
(:class:`NCCLogits`) and records only its NCC rows.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ncrobust.attacks import PIXEL_BOUNDS, Bounds, gaussian, pgd, target_labels
from ncrobust.attacks.ball import random_offsets
from ncrobust.attacks.margin import margin_pgd
from ncrobust.collapse import AttackStatistics, CollapseAccumulator
from ncrobust.data import Split, to_pixels
from ncrobust.distributed import Rows, all_reduce_sum, draw_rows, shard_rows
from ncrobust.errors import UsageError
from ncrobust.probing.missing_classes import (
    NCC_METRICS,
    SIMPLEX_METRICS,
    ReferenceNCC,
    absent_classes,
    describe_absent,
    missing_metrics,
)
from ncrobust.runs.tables import metric_rows
from ncrobust.runtime import autocast, eval_mode, make_generator
from ncrobust.views import (
    ADAPTIVE_VIEW,
    OUTPUT_LAYER,
    PERTURBED_VIEWS,
    SPLITS,
    scaled_step,
    view_kind,
)

# (inputs, layer names) -> (logits, {layer: features}); a TappedClassifier's forward with taps
Extractor = Callable[[torch.Tensor, Sequence[str]], tuple[torch.Tensor, dict[str, torch.Tensor]]]
# layer -> (class means, global mean) of the clean train set: every other view's reference
Reference = dict[str, tuple[torch.Tensor, torch.Tensor]]


class SplitData(Protocol):
    """What the probes read of a split: ``images[start:stop]`` batches (uint8 pixels or floats,
    any sample shape) with ``images.shape``, and all ``labels`` [N]. A :class:`Split` is one."""

    @property
    def images(self) -> Any: ...

    @property
    def labels(self) -> torch.Tensor: ...


def tapped_extractor(model: nn.Module) -> Extractor:
    """The :data:`Extractor` of a model with named taps (``model(x, taps=[...])``)."""

    def extract(
        x: torch.Tensor, layers: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not layers:
            return model(x), {}
        logits, taps = model(x, taps=list(layers))
        return logits, taps

    return extract


class Threat(Protocol):
    """What a :class:`ProbeSpec` takes from a threat model (a config or attack settings)."""

    @property
    def norm(self) -> str: ...
    @property
    def eps(self) -> float: ...
    @property
    def alpha(self) -> float: ...
    @property
    def steps(self) -> int: ...
    @property
    def gaussian_std(self) -> float: ...
    @property
    def precision(self) -> str: ...


@dataclass
class ProbeSpec:
    """What to measure and with which threat model."""

    plan: list[tuple[str, str]]  # (split, view) pairs
    layers: list[str]
    norm: str
    eps: float
    alpha: float
    steps: int
    gaussian_std: float = 8 / 255
    batch_size: int = 512
    cache_bytes: int = 2 << 30
    seed: int = 0
    precision: str = "fp32"
    head_layer: str | None = "penultimate"  # the layer the final Linear reads
    accuracy_only: list[tuple[str, str]] = field(default_factory=list)  # no NC, output rows only
    bounds: Bounds = PIXEL_BOUNDS  # the input box the perturbed views are clamped to
    input_dtype: torch.dtype = torch.float32  # the model's input dtype (uint8 becomes x / 255)
    radii: dict[str, float] = field(default_factory=dict)  # view label -> its own eps
    per_class: bool = False  # also keep each accumulator's per-class table (ProbeResult)

    @classmethod
    def for_threat(
        cls, threat: Threat, plan: list[tuple[str, str]], layers: list[str], **rest: Any
    ) -> ProbeSpec:
        """A spec with the threat model of ``threat`` (a run's config, or any object with its
        norm, eps, alpha, steps, gaussian_std and precision); ``rest`` sets the other fields."""
        return cls(
            plan=plan,
            layers=layers,
            norm=threat.norm,
            eps=threat.eps,
            alpha=threat.alpha,
            steps=threat.steps,
            gaussian_std=threat.gaussian_std,
            precision=threat.precision,
            **rest,
        )


@dataclass
class PerturbedSet:
    """Inputs perturbed during training (the ``train_adv`` view) with their labels."""

    inputs: torch.Tensor
    labels: torch.Tensor


@dataclass
class ProbeResult:
    """Tidy metric rows and Figure 7 statistics rows of one measurement, and the metrics that
    could not be computed (``epoch, split, view, layer, metric, reason``; e.g. a class with no
    sample in a split)."""

    metrics: list[dict[str, Any]] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    per_class: list[pd.DataFrame] = field(default_factory=list)  # with ``per_class=True``


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (the same on every machine and Python run)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class Prober:
    """Runs a :class:`ProbeSpec` against one model state.

    ``shard=(rank, world_size)``: under torch.distributed each process measures its rows of
    every measurement batch (and the ``train_adv`` samples it perturbed itself); the sums
    all-reduce, and perturbations are drawn for the whole batch, so every process gets the
    numbers of one process measuring everything.
    """

    def __init__(
        self,
        model: nn.Module,
        extractor: Extractor,
        spec: ProbeSpec,
        num_classes: int,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        device: torch.device,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        shard_rows(1, *shard)  # checks the rank
        self.shard = shard
        self.model = model
        self.extractor = extractor
        self.spec = spec
        self.num_classes = num_classes
        self.weight = None if weight is None else weight.detach()
        self.bias = None if bias is None else bias.detach()
        self.device = device
        unscaled = [v for _, v in spec.plan if v != view_kind(v) and v not in spec.radii]
        if unscaled:
            raise ValueError(f"views {unscaled} carry a radius that ProbeSpec.radii lacks")

    @classmethod
    def for_classifier(
        cls,
        model: nn.Module,
        spec: ProbeSpec,
        num_classes: int,
        device: torch.device,
        shard: tuple[int, int] = (0, 1),
    ) -> Prober:
        """A prober of a model with named taps and a ``classifier`` head (``nn.Linear``), such as
        ncrobust's own models: the head's weight and bias give NC2-4, its taps the layers."""
        head = model.classifier
        if not isinstance(head, nn.Linear):
            raise TypeError(f"{type(model).__name__}.classifier is not an nn.Linear")
        return cls(
            model, tapped_extractor(model), spec, num_classes, head.weight, head.bias, device, shard
        )

    def run(
        self,
        splits: Mapping[str, Split] | Mapping[str, SplitData],
        epoch: int,
        train_adv: PerturbedSet | None = None,
        on_view: Callable[[str, str], None] | None = None,
    ) -> ProbeResult:
        """Measure every planned (split, view) at ``epoch``; the model's mode is restored after.

        ``on_view(split, view)`` is called after each view (e.g. to advance a progress bar).
        """
        result = ProbeResult()
        done = on_view or (lambda split, view: None)
        plan = list(self.spec.plan)
        # per split, clean first: its logits are the KL reference of the perturbed views
        order = sorted(
            [*plan, *self.spec.accuracy_only],
            key=lambda pair: (SPLITS.index(pair[0]), pair[1] != "clean"),
        )
        with eval_mode(self.model):
            reference: Reference | None = None
            clean_logits: dict[str, torch.Tensor] = {}
            if plan:  # every planned view needs the clean train means (or is them)
                train = splits["train"]
                reference, clean_logits["train"] = self._view(
                    "train",
                    "clean",
                    train.images,
                    train.labels,
                    epoch,
                    None,
                    None,
                    result,
                    record=("train", "clean") in plan,
                )
                done("train", "clean")
            for split_name, view in order:
                if (split_name, view) == ("train", "clean"):
                    continue
                layers_off = (split_name, view) in self.spec.accuracy_only
                if view_kind(view) == ADAPTIVE_VIEW:
                    if not layers_off:
                        split = splits[split_name]
                        self._adaptive_view(
                            split_name, view, split.images, split.labels, epoch, reference, result
                        )
                    done(split_name, view)
                    continue
                if view == "train_adv":
                    if train_adv is None:
                        continue  # nothing was perturbed in this epoch's training
                    images, labels = train_adv.inputs, train_adv.labels
                else:
                    images, labels = splits[split_name].images, splits[split_name].labels
                _, logits = self._view(
                    split_name,
                    view,
                    images,
                    labels,
                    epoch,
                    reference,
                    clean_logits.get(split_name),
                    result,
                    layers_off=layers_off,
                )
                if view == "clean":
                    clean_logits[split_name] = logits
                done(split_name, view)
        return result

    # -- one view -------------------------------------------------------------------------

    def _view(
        self,
        split_name: str,
        view: str,
        images: Any,
        labels: torch.Tensor,
        epoch: int,
        reference: Reference | None,
        clean_logits: torch.Tensor | None,
        result: ProbeResult,
        record: bool = True,
        layers_off: bool = False,
    ) -> tuple[Reference | None, torch.Tensor]:
        """Measure one view; returns the clean train means (for the clean train view) and the
        view's logits."""
        spec, device = self.spec, self.device
        layers = [] if layers_off else list(spec.layers)
        labels = labels.to(device)
        label, view = view, view_kind(view)  # rows carry the label; the view says what to do
        parts = self._parts(len(labels), local=view == "train_adv")
        m = sum(stop - start for start, stop, _, _ in parts)  # this process's samples
        n = len(labels)  # samples over all processes
        if view == "train_adv":  # each process holds the samples it perturbed
            count = torch.tensor([float(m)], dtype=torch.float64, device=device)
            n = int(all_reduce_sum(count).item())
        nc_labels = target_labels(labels, self.num_classes) if view == "targeted" else labels
        generator = make_generator(derive_seed(spec.seed, epoch, split_name, label), device)
        fresh = view in ("pgd", "targeted", "gaussian")
        inputs = None
        if fresh:
            inputs = torch.empty((m, *images.shape[1:]), dtype=spec.input_dtype, device=device)
        own_reference = (split_name, view) == ("train", "clean")  # the reference of the others
        absent = self._absent(nc_labels, local=view == "train_adv") if layers else []
        accumulators = {
            layer: CollapseAccumulator(
                self.num_classes,
                weight=self.weight if layer == spec.head_layer else None,
                bias=self.bias if layer == spec.head_layer else None,
                reference_means=None if reference is None else reference[layer][0],
                reference_global_mean=None if reference is None else reference[layer][1],
                self_reference=own_reference,
                device=device,
            )
            for layer in layers
            if not absent
        }
        # a view missing a class keeps what needs no class means of its own
        partial = {
            layer: ReferenceNCC(*reference[layer])
            for layer in layers
            if absent and reference is not None
        }
        statistics = {}
        if view in PERTURBED_VIEWS and reference is not None:
            statistics = {
                layer: AttackStatistics(self.num_classes, reference[layer][0]) for layer in layers
            }
        # float32 logits, or float64 for a float64 model (kept exact end to end)
        logits_dtype = torch.promote_types(spec.input_dtype, torch.float32)
        logits_all = torch.empty((m, self.num_classes), dtype=logits_dtype, device=device)
        cache: dict[str, torch.Tensor] | None = None
        totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct, kl, hits

        # pass 1: make the view's inputs, forward once for all layers, class counts and sums
        for start, stop, at, rows in parts:  # rows [start, stop) of the data, [at, ...) here
            here = slice(at, at + stop - start)
            x = self._inputs(label, images, start, stop, labels, generator, rows)
            if inputs is not None:
                inputs[here] = x
            with torch.no_grad():
                logits, features = self.extractor(x, layers)
            logits = logits.to(logits_dtype)
            logits_all[here] = logits
            y = labels[start:stop]
            # per-sample values summed in float64: the same total however the rows are batched
            totals[0] += F.cross_entropy(logits, y, reduction="none").double().sum()
            totals[1] += (logits.argmax(1) == y).sum()
            if clean_logits is not None and view != "train_adv":
                totals[2] += _kl_sum(clean_logits[here], logits)
            if view == "targeted":
                totals[3] += (logits.argmax(1) == nc_labels[start:stop]).sum()
            if cache is None and accumulators:
                cache = self._allocate_cache(features, m)
            for layer in layers:
                feats = features[layer].flatten(1)
                if layer in accumulators:
                    with _named(layer, split_name, label):
                        accumulators[layer].update(feats, nc_labels[start:stop], logits)
                elif layer in partial:
                    with _named(layer, split_name, label):
                        partial[layer].update(feats, nc_labels[start:stop], logits)
                if layer in statistics:
                    statistics[layer].update(feats, logits.argmax(1))
                if cache is not None:
                    cache[layer][here] = feats

        # pass 2: projected within-class spread and NCC agreement on the same inputs
        for accumulator in accumulators.values():
            accumulator.next_pass()
        if accumulators and record:
            for start, stop, at, _ in parts:
                here = slice(at, at + stop - start)
                if cache is not None:
                    features = {layer: cache[layer][here] for layer in layers}
                else:
                    x = self._stored_inputs(images, start, stop, inputs, here)
                    with torch.no_grad():
                        _, features = self.extractor(x, layers)
                for layer in layers:
                    with _named(layer, split_name, label):
                        accumulators[layer].update(
                            features[layer].flatten(1), nc_labels[start:stop], logits_all[here]
                        )

        if record:
            all_reduce_sum(totals)
            output = {"accuracy": totals[1].item() / n, "loss": totals[0].item() / n}
            if clean_logits is not None and view != "train_adv" and view != "clean":
                output["kl"] = totals[2].item() / n
            if view == "targeted":
                output["target_accuracy"] = totals[3].item() / n
            result.metrics += metric_rows(epoch, split_name, label, OUTPUT_LAYER, output)
            for layer, accumulator in accumulators.items():
                values = accumulator.compute()
                result.metrics += metric_rows(epoch, split_name, label, layer, values)
                if spec.per_class:
                    table = accumulator.per_class()
                    table.insert(0, "layer", layer)
                    table.insert(0, "view", label)
                    table.insert(0, "split", split_name)
                    table.insert(0, "epoch", epoch)
                    result.per_class.append(table)
            for layer, ncc in partial.items():
                result.metrics += metric_rows(epoch, split_name, label, layer, ncc.compute())
            result.missing += self._missing_rows(
                epoch, split_name, label, layers, absent, reference, own_reference
            )
            for layer, stat in statistics.items():
                result.stats += _stat_rows(epoch, split_name, label, layer, stat.compute())
        means = None
        if own_reference and not absent:
            means = {layer: (acc.means(), acc.global_mean()) for layer, acc in accumulators.items()}
        return means, logits_all

    def _missing_rows(
        self,
        epoch: int,
        split_name: str,
        view: str,
        layers: Sequence[str],
        absent: Sequence[int],
        reference: Reference | None,
        own_reference: bool,
    ) -> list[dict[str, Any]]:
        """Records of the metrics this view could not compute, with the reason."""
        rows = []
        for layer in layers:
            names: list[str] = []
            reason = ""
            if absent:
                names = missing_metrics(
                    weight=layer == self.spec.head_layer and self.weight is not None,
                    reference=reference is not None,
                    self_reference=own_reference,
                )
                reason = describe_absent(split_name, view, absent)
            if reference is None and not own_reference:
                names += [m for m in (*NCC_METRICS, *SIMPLEX_METRICS) if m not in names]
                reason = (reason + "; " if reason else "") + (
                    "the clean train split lacks a class, so there are no reference means"
                )
            rows += [
                {
                    "epoch": epoch,
                    "split": split_name,
                    "view": view,
                    "layer": layer,
                    "metric": name,
                    "reason": reason,
                }
                for name in names
            ]
        return rows

    def _parts(self, count: int, local: bool) -> list[tuple[int, int, int, Rows | None]]:
        """(start, stop, position here, rows of the global batch) of this process's batches.

        ``local`` data (``train_adv``: already this process's own samples) is taken whole; any
        other split is cut into global batches of which this process takes its rows.
        """
        rank, world = self.shard
        size, parts, at = self.spec.batch_size, [], 0
        for first in range(0, count, size):
            total = min(first + size, count) - first
            low, high = (0, total) if local else shard_rows(total, rank, world)
            if high > low:
                rows = None if local else (low, high, total)
                parts.append((first + low, first + high, at, rows))
                at += high - low
        return parts

    def _absent(self, labels: torch.Tensor, local: bool) -> list[int]:
        """Classes with no sample in the view; ``local`` labels (``train_adv``) are counted over
        every process, so that all processes agree on which accumulators exist."""
        if not local or self.shard[1] == 1:
            return absent_classes(labels, self.num_classes)
        counts = torch.bincount(labels, minlength=self.num_classes).double()
        return (all_reduce_sum(counts) == 0).nonzero().flatten().tolist()

    def _inputs(
        self,
        view: str,
        images: torch.Tensor,
        start: int,
        stop: int,
        labels: torch.Tensor,
        generator: torch.Generator,
        rows: Rows | None,
    ) -> torch.Tensor:
        """The view's inputs for rows ``start:stop`` (``view`` a plan label); random draws are
        made for the whole global batch (``rows``: this process's part of it)."""
        x = to_pixels(images[start:stop], self.device, self.spec.input_dtype)
        label, view = view, view_kind(view)
        if view in ("clean", "train_adv"):
            return x
        spec = self.spec
        if view == "gaussian":
            noise = draw_rows(x, rows, lambda t: t.normal_(generator=generator))
            return gaussian(x, spec.gaussian_std, noise=noise, bounds=spec.bounds)
        y = labels[start:stop]
        return self._attack(self.model, x, y, label, generator, rows, view == "targeted")

    def _attack(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        label: str,
        generator: torch.Generator,
        rows: Rows | None,
        targeted: bool = False,
        attack: Callable[..., torch.Tensor] = pgd,
    ) -> torch.Tensor:
        """``attack`` (:func:`pgd` or :func:`margin_pgd`) on ``model``'s logits with the threat
        model of the view ``label`` (its own radius, the step scaled linearly), from random
        offsets drawn for the global batch."""
        spec = self.spec
        eps, alpha = spec.eps, spec.alpha
        if label in spec.radii:  # the view's own radius, the step scaled linearly
            eps, alpha = spec.radii[label], scaled_step(spec.alpha, spec.eps, spec.radii[label])
        offsets = draw_rows(x, rows, lambda t: random_offsets(t, spec.norm, eps, generator))
        with torch.enable_grad(), autocast(self.device, spec.precision):
            return attack(
                model,
                x,
                y,
                norm=spec.norm,
                eps=eps,
                alpha=alpha,
                steps=spec.steps,
                targeted=targeted,
                bounds=spec.bounds,
                start=x + offsets,  # clamped to the bounds by pgd
            )

    def _adaptive_view(
        self,
        split_name: str,
        label: str,
        images: Any,
        labels: torch.Tensor,
        epoch: int,
        reference: Reference | None,
        result: ProbeResult,
    ) -> None:
        """The ``ncc_adaptive`` view: per layer, PGD on the margin of that layer's
        nearest-class-mean rule (:func:`margin_pgd` on :class:`NCCLogits` of the clean train
        means, the pgd view's norm, radius, step and steps), then the layer's ``ncc_accuracy`` and
        ``ncc_match`` (agreement with the network) on the attacked inputs.

        Finding 6 classifies network-PGD points with an early layer's NCC rule: a transfer
        attack on that rule. This view attacks the rule itself, so its accuracy is what the
        rule's robustness is worth against an attacker who knows it.
        """
        if reference is None:  # no clean train means: no rule to attack
            layers = self.spec.layers
            missing = self._missing_rows(epoch, split_name, label, layers, [], None, False)
            result.missing += [row for row in missing if row["metric"] in NCC_METRICS]
            return
        labels = labels.to(self.device)
        parts = self._parts(len(labels), local=False)
        for layer in self.spec.layers:
            means, centre = reference[layer]
            rule = NCCLogits(self.extractor, layer, means, centre)
            ncc = ReferenceNCC(means, centre)
            seed = derive_seed(self.spec.seed, epoch, split_name, label, layer)
            generator = make_generator(seed, self.device)
            for start, stop, _, rows in parts:
                x = to_pixels(images[start:stop], self.device, self.spec.input_dtype)
                y = labels[start:stop]
                x_adv = self._attack(rule, x, y, label, generator, rows, attack=margin_pgd)
                with torch.no_grad():
                    logits, features = self.extractor(x_adv, [layer])
                ncc.update(features[layer].flatten(1), y, logits.float())
            all_reduce_sum(ncc.totals)
            result.metrics += metric_rows(epoch, split_name, label, layer, ncc.compute())

    def _stored_inputs(
        self, images: Any, start: int, stop: int, store: torch.Tensor | None, here: slice
    ) -> torch.Tensor:
        """Pass 2 inputs: the stored perturbation, or the clean inputs again."""
        if store is not None:
            return store[here]
        return to_pixels(images[start:stop], self.device, self.spec.input_dtype)

    def _allocate_cache(
        self, features: Mapping[str, torch.Tensor], n: int
    ) -> dict[str, torch.Tensor] | None:
        """Feature buffers for pass 2 when all layers fit in ``cache_bytes``, else None; in the
        features' own precision (float32 at least: a float64 model's features stay float64)."""
        dtypes = {k: torch.promote_types(f.dtype, torch.float32) for k, f in features.items()}
        sizes = {k: math.prod(f.shape[1:]) for k, f in features.items()}
        total = sum(n * sizes[k] * dtypes[k].itemsize for k in features)
        if total > self.spec.cache_bytes:
            return None
        return {
            layer: torch.empty((n, sizes[layer]), dtype=dtypes[layer], device=self.device)
            for layer in features
        }


@contextmanager
def _named(layer: str, split: str, view: str) -> Iterator[None]:
    """Non-finite features are the model's, on these inputs: say where they appeared."""
    try:
        yield
    except ValueError as exc:
        if "NaN or inf" not in str(exc):
            raise
        raise UsageError(
            f"layer {layer!r} of split {split!r}, view {view!r}: the model's {exc} (check the "
            "model and its inputs there, or measure other layers=)"
        ) from None


class NCCLogits(nn.Module):
    """A layer's nearest-class-mean rule as a differentiable classifier: logits −‖h(x) − μ_c‖²,
    with μ_c the clean train class means of the layer (the argmax is the NCC prediction).

    The per-row term ‖h − g‖² is dropped (it shifts all logits of a row alike and cancels in
    the margin), leaving 2⟨h − g, μ_c − g⟩ − ‖μ_c − g‖² with g the global mean, as
    :class:`ReferenceNCC` computes the nearest centre.
    """

    centre: torch.Tensor
    centred: torch.Tensor
    offsets: torch.Tensor

    def __init__(
        self, extractor: Extractor, layer: str, means: torch.Tensor, global_mean: torch.Tensor
    ) -> None:
        super().__init__()
        self.extractor = extractor
        self.layer = layer
        centred = (means.detach() - global_mean.detach()).float()
        self.register_buffer("centre", global_mean.detach().float())
        self.register_buffer("centred", centred)
        self.register_buffer("offsets", centred.square().sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, features = self.extractor(x, [self.layer])
        h = features[self.layer].flatten(1).float() - self.centre
        return 2.0 * h @ self.centred.T - self.offsets


def _kl_sum(clean_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Sum over rows of KL(softmax(clean) ‖ softmax(perturbed))."""
    kl = F.kl_div(
        F.log_softmax(logits, 1), F.log_softmax(clean_logits, 1), reduction="none", log_target=True
    )
    return kl.sum(1).double().sum()


# the table's names for AttackStatistics' keys (the paper's Figure 7 panels)
STAT_NAMES = {"counts": "predicted_count"}


def _stat_rows(
    epoch: int, split: str, view: str, layer: str, values: Mapping[str, Any]
) -> list[dict[str, Any]]:
    rows = []
    for key, per_class in values.items():
        statistic = STAT_NAMES.get(key, key)
        for c, value in enumerate(torch.as_tensor(per_class, dtype=torch.float64).tolist()):
            rows.append(
                {
                    "epoch": epoch,
                    "split": split,
                    "view": view,
                    "layer": layer,
                    "class": c,
                    "statistic": statistic,
                    "value": value,
                }
            )
    return rows
