"""Taps of any ``nn.Module``: named features recorded by hooks, as the probes need them.

A tap name is a module name from ``model.named_modules()`` (the module's output), optionally
``name:input`` (its input), ``name#k`` (its k-th call in one forward pass, for a module that runs
more than once) or ``penultimate`` (the input of the classifier: by default the module that
produces the logits, see :func:`logits_source`). A tap copies the tensor at the moment the module
produces (or receives) it, so an in-place operation later in the pass (``ReLU(inplace=True)``
after a BatchNorm) does not change it. Hooks live only during one call.

:func:`trace` runs the model once on an example batch and records every module call; the tap
names, their shapes, the classifier and ``layers="all"`` all come from that record.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ncrobust.errors import UsageError
from ncrobust.views import PENULTIMATE

CONV_HEADS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def first_tensor(value: Any) -> Tensor | None:
    """The tensor itself, or the first tensor of a tuple/list/dict output (None if none)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, tuple | list):
        for item in value:
            if isinstance(item, Tensor):
                return item
    return None


@dataclass(frozen=True)
class Call:
    """One module call seen by :func:`trace`."""

    module: str
    index: int  # 0 for the module's first call in the pass
    kind: str  # the module's class name
    leaf: bool
    output_shape: tuple[int, ...] | None  # per sample; None when the output holds no tensor
    input_shape: tuple[int, ...] | None


@dataclass
class Trace:
    """Every module call of one forward pass, in the order the calls finished."""

    calls: list[Call] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    outputs: list[Tensor | None] = field(default_factory=list)  # each call's output tensor


def logits_source(record: Trace, logits: Tensor) -> tuple[Call, bool] | None:
    """The call that produced the logits, and whether it produced that very tensor.

    The first call to finish whose output *is* the logits (or a view of the same storage and
    size): the innermost module, as wrappers return the same tensor after it. Failing that
    (logits computed outside any module, e.g. ``fc(h) / T``), the last call whose output has
    the logits' shape.
    """
    for call, out in zip(record.calls, record.outputs, strict=True):
        if out is not None and (out is logits or _same_storage(out, logits)):
            return call, True
    shaped = [c for c in record.calls if c.output_shape == tuple(logits.shape[1:])]
    return (shaped[-1], False) if shaped else None


def _same_storage(a: Tensor, b: Tensor) -> bool:
    try:
        return bool(
            a.numel() == b.numel()
            and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
            and a.storage_offset() == b.storage_offset()
        )
    except (RuntimeError, NotImplementedError):  # tensors without a plain storage (sparse)
        return False


def trace(model: nn.Module, forward: Callable[[Tensor], Any], x: Tensor) -> tuple[Trace, Any]:
    """Run ``forward(x)`` once without gradients, recording every call of ``model``'s modules;
    returns the record and the raw output."""
    record = Trace()
    handles: list[RemovableHandle] = []

    def hook_for(name: str, module: nn.Module) -> Callable[..., None]:
        leaf = next(module.children(), None) is None

        def hook(mod: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            index = record.counts.get(name, 0)
            record.counts[name] = index + 1
            out, inp = first_tensor(output), first_tensor(args)
            record.outputs.append(out)
            record.calls.append(
                Call(
                    name,
                    index,
                    type(mod).__name__,
                    leaf,
                    None if out is None else tuple(out.shape[1:]),
                    None if inp is None else tuple(inp.shape[1:]),
                )
            )

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(hook_for(name, module)))
        with torch.no_grad():
            output = forward(x)
    finally:
        for handle in handles:
            handle.remove()
    return record, output


@dataclass(frozen=True)
class Tap:
    """A parsed tap name: which module, which call (None: its only call), input or output."""

    name: str
    module: str
    call: int | None
    wants_input: bool


def parse_tap(name: str, classifier: str) -> Tap:
    """``module[#k][:input]`` or ``penultimate`` (the classifier's input)."""
    if name == PENULTIMATE:
        return Tap(name, classifier, None, True)
    base, colon, suffix = name.partition(":")
    if colon and suffix != "input":
        raise UsageError(f"layer {name!r}: the only suffix is ':input' (a module's input)")
    module, hash_, call = base.partition("#")
    index = None
    if hash_:
        if not call.isdigit():
            raise UsageError(f"layer {name!r}: a call index is a number, as in {module}#0")
        index = int(call)
    return Tap(name, module, index, bool(colon))


def all_taps(record: Trace, classifier: str) -> list[str]:
    """Every leaf module that produces a tensor, in execution order (``name#k`` for a module
    that runs several times), then ``penultimate``; the classifier and what runs inside it are
    left out (its input is ``penultimate``, its output the logits)."""
    names = []
    inside = classifier + "."
    for call in record.calls:
        if not call.leaf or call.output_shape is None:
            continue
        if call.module == classifier or call.module.startswith(inside):
            continue
        several = record.counts[call.module] > 1
        names.append(f"{call.module}#{call.index}" if several else call.module)
    return [*names, PENULTIMATE]


def resolve_taps(
    layers: str | Sequence[str], record: Trace, modules: dict[str, nn.Module], classifier: str
) -> list[str]:
    """Check the requested tap names against the traced pass (``"all"`` expands)."""
    if isinstance(layers, str):
        layers = [layers]
    if list(layers) == ["all"]:
        return all_taps(record, classifier)
    if not layers:
        raise UsageError("layers is empty: name at least one tap (or 'penultimate', or 'all')")
    if len(set(layers)) != len(layers):
        raise UsageError(f"layers lists a tap twice: {list(layers)}")
    valid = [*dict.fromkeys(c.module for c in record.calls), PENULTIMATE]
    for layer in layers:
        tap = parse_tap(layer, classifier)
        if tap.module not in modules:
            close = difflib.get_close_matches(tap.module, valid, n=5, cutoff=0.5)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise UsageError(
                f"the model has no module named {tap.module!r} to tap{hint} "
                "(list_layers(model, example) shows every tap)"
            )
        calls = record.counts.get(tap.module, 0)
        if calls == 0:
            raise UsageError(f"module {tap.module!r} does not run in the model's forward pass")
        if tap.call is None and calls > 1:
            options = ", ".join(f"{tap.module}#{k}" for k in range(calls))
            raise UsageError(
                f"module {tap.module!r} runs {calls} times per forward pass, so its output is "
                f"not one feature: tap one call with {options}"
            )
        if tap.call is not None and tap.call >= calls:
            raise UsageError(
                f"layer {layer!r}: module {tap.module!r} runs {calls} time(s) per forward pass "
                f"(calls #0 to #{calls - 1})"
            )
        shape = tap_shape(record, tap)
        if shape is None:
            raise UsageError(f"layer {layer!r}: the module's {_side(tap)} holds no tensor")
    return list(layers)


def tap_shape(record: Trace, tap: Tap) -> tuple[int, ...] | None:
    """The per-sample shape of a tap in the traced pass."""
    for call in record.calls:
        if call.module == tap.module and call.index == (tap.call or 0):
            return call.input_shape if tap.wants_input else call.output_shape
    return None


def depth_order(layers: Sequence[str], record: Trace, classifier: str) -> list[str]:
    """The taps sorted by when their tensor exists in the pass (the classifier's input just
    before its output)."""
    finish = {(c.module, c.index): i for i, c in enumerate(record.calls)}

    def position(layer: str) -> float:
        tap = parse_tap(layer, classifier)
        at = finish.get((tap.module, tap.call or 0), len(finish))
        return at - 0.5 if tap.wants_input else at

    return sorted(layers, key=position)


def _side(tap: Tap) -> str:
    return "input" if tap.wants_input else "output"


class HookedExtractor:
    """Logits and tapped features of any model in one forward pass, by hooks on its modules.

    ``forward`` maps inputs to logits (the model behind any transform and output selection);
    ``classifier`` is the module whose input is ``penultimate``.
    """

    def __init__(
        self, model: nn.Module, forward: Callable[[Tensor], Tensor], classifier: str
    ) -> None:
        self.model = model
        self.forward = forward
        self.modules = dict(model.named_modules())
        self.classifier_name = classifier

    def __call__(self, x: Tensor, layers: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
        captured: dict[str, Tensor] = {}
        calls: dict[str, int] = {}
        taps = [parse_tap(layer, self.classifier_name) for layer in layers]
        handles: list[RemovableHandle] = []
        try:
            for module_name in dict.fromkeys(t.module for t in taps):
                mine = [t for t in taps if t.module == module_name]
                module = self.modules[module_name]
                handles.append(module.register_forward_pre_hook(_pre(mine, calls, captured)))
                handles.append(module.register_forward_hook(_post(mine, calls, captured)))
            logits = self.forward(x)
        finally:
            for handle in handles:
                handle.remove()
        for tap in taps:
            seen = calls.get(tap.module, 0)
            if tap.call is None and seen > 1:
                raise UsageError(
                    f"module {tap.module!r} ran {seen} times in this forward pass: tap one call "
                    f"with {tap.module}#0 .. {tap.module}#{seen - 1}"
                )
            if tap.name not in captured:
                raise UsageError(f"layer {tap.name!r} was not produced in this forward pass")
        return logits, captured


def _pre(
    taps: list[Tap], calls: dict[str, int], store: dict[str, Tensor]
) -> Callable[[nn.Module, tuple[Any, ...]], None]:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        index = calls.get(taps[0].module, 0)
        for tap in taps:
            if tap.wants_input and (tap.call or 0) == index:
                value = first_tensor(args)
                if value is not None:  # copied now: the module may change it in place
                    store[tap.name] = _copy(value)

    return hook


def _post(
    taps: list[Tap], calls: dict[str, int], store: dict[str, Tensor]
) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        index = calls.get(taps[0].module, 0)
        calls[taps[0].module] = index + 1
        for tap in taps:
            if not tap.wants_input and (tap.call or 0) == index:
                value = first_tensor(output)
                if value is not None:  # copied now: a later in-place op must not change it
                    store[tap.name] = _copy(value)

    return hook


def _copy(value: Tensor) -> Tensor:
    """A tap's copy: detached, unless gradients are on (an attack through the features, such as
    the ``ncc_adaptive`` view's, differentiates the copy back to the input)."""
    return value.clone() if torch.is_grad_enabled() else value.detach().clone()


def head_weight(
    module: nn.Module, penultimate_shape: tuple[int, ...], num_classes: int
) -> tuple[Tensor, Tensor | None] | None:
    """(W, b) when the classifier has a C×p weight acting on the flattened penultimate features:
    any module with a ``weight`` [C, p] on [N, p] inputs (an ``nn.Linear``, or a normalised /
    cosine head such as ``s · normalize(h) @ normalize(W).T``, whose ``weight`` then gives the W
    metrics), or a 1×1 convolution on [N, p, 1, ...] inputs."""
    p = math.prod(penultimate_shape)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.shape[0] != num_classes:
        return None
    bias = getattr(module, "bias", None)
    bias = bias if isinstance(bias, Tensor) else None
    if len(penultimate_shape) == 1 and weight.ndim == 2 and weight.shape[1] == p:
        return weight, bias
    if isinstance(module, CONV_HEADS) and module.groups == 1:
        point = all(k == 1 for k in module.kernel_size)
        spatial_one = len(penultimate_shape) >= 2 and math.prod(penultimate_shape[1:]) == 1
        if point and spatial_one and weight.shape[1] == p:
            return weight.reshape(num_classes, p), bias
    return None


def pool_features(features: Tensor, pool: int) -> Tensor:
    """Average-pool a feature map [N, C, L] / [N, C, H, W] / [N, C, D, H, W] so that no side
    exceeds ``pool``; vectors [N, p] are returned as they are."""
    spatial = features.ndim - 2
    if spatial <= 0:
        return features
    if spatial > 3:
        raise UsageError(
            f"pool applies to 1-D, 2-D and 3-D feature maps; got features of shape "
            f"{tuple(features.shape)}"
        )
    size = tuple(min(side, pool) for side in features.shape[2:])
    if size == tuple(features.shape[2:]):
        return features
    if spatial == 1:
        return nn.functional.adaptive_avg_pool1d(features, size[0])
    if spatial == 2:
        return nn.functional.adaptive_avg_pool2d(features, (size[0], size[1]))
    return nn.functional.adaptive_avg_pool3d(features, (size[0], size[1], size[2]))
