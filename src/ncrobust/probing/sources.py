"""Data in for :func:`~ncrobust.probing.measure`: what researchers have, checked before compute.

A split is given as ``(x, y)`` (torch tensors or numpy arrays; x floating-point inputs of any
sample shape, uint8 images [N, C, H, W] / [N, H, W] read as pixels x / 255, or other integer
inputs such as token ids, passed to the model untouched; y integer labels as a tensor, an array
or a list, [N] or an [N, 1] column), as an :class:`~ncrobust.data.Split`, or as a
``torch.utils.data.Dataset`` / ``DataLoader`` yielding ``(x, y)`` or dict samples (keys in
:data:`INPUT_KEYS` and :data:`LABEL_KEYS`), which is streamed:
one pass reads the labels and checks every value, and each later pass reads the batches again
in the same order. Every refusal names the split, the argument and the expected form.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ncrobust.attacks.validation import Bound
from ncrobust.data import ImageDataset, Split, is_pixels
from ncrobust.errors import UsageError
from ncrobust.views import SPLITS

FORMS = (
    "an ImageDataset, one (x, y) pair or Dataset/DataLoader (measured as 'train'), or a mapping "
    "{'train': ..., 'test': ...} of (x, y) pairs, Splits, Datasets or DataLoaders"
)
INPUT_KEYS = ("input", "inputs", "x", "image", "images", "pixel_values", "input_ids")
LABEL_KEYS = ("label", "labels", "y", "target", "targets")
CHECK_ROWS = 4096  # rows per chunk when checking uint8 inputs against tensor bounds


class SampleKeys(NamedTuple):
    """The keys of the input and the label in dict samples (None: the first of
    :data:`INPUT_KEYS` / :data:`LABEL_KEYS` present)."""

    input: str | None = None
    label: str | None = None


DEFAULT_KEYS = SampleKeys()


@dataclass(frozen=True, eq=False)
class MeasureSplit:
    """One split as the probes read it: ``images[start:stop]`` batches and all labels (int64)."""

    images: Tensor | StreamedInputs
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one input."""
        return tuple(self.images.shape[1:])

    def to(self, device: torch.device) -> MeasureSplit:
        """In-memory inputs move to ``device``; streamed ones stay where the loader puts them."""
        images = self.images.to(device) if isinstance(self.images, Tensor) else self.images
        return MeasureSplit(images, self.labels.to(device))


def as_splits(
    data: Any,
    *,
    box: tuple[Bound, Bound] | None,
    dtype: torch.dtype,
    batch_size: int,
    keys: SampleKeys = DEFAULT_KEYS,
) -> dict[str, MeasureSplit]:
    """Every split of ``data`` converted and checked (values, labels, shapes, devices).

    ``box`` is the checked input box (see :func:`~ncrobust.attacks.validation.check_bounds`,
    with tensors broadcastable to ``[1, *sample]``) or None; ``dtype`` the model's input dtype,
    to which float inputs are converted (uint8 stays uint8 until a batch is used); ``keys``
    name the input and label of dict samples.
    """
    if isinstance(data, ImageDataset):
        data = {"train": data.train, "test": data.test}
    elif _is_single(data):
        data = {"train": data}
    if not isinstance(data, Mapping):
        raise UsageError(f"data must be {FORMS}; got {type(data).__name__}")
    if not data:
        raise UsageError(f"data has no split; give {FORMS}")
    splits = {}
    for name, value in data.items():
        if name not in SPLITS:
            raise UsageError(f"unknown split {name!r} in data (use train and/or test)")
        splits[name] = _split(name, value, box, dtype, batch_size, keys)
    shapes = {name: split.sample_shape for name, split in splits.items()}
    if len(set(shapes.values())) > 1:
        raise UsageError(f"the splits' inputs differ in shape: {shapes}")
    return splits


def _is_single(data: Any) -> bool:
    """One split given directly: an (x, y) pair, a Split, a Dataset or a DataLoader."""
    if isinstance(data, Split | Dataset | DataLoader):
        return True
    return (
        isinstance(data, tuple | list)
        and len(data) == 2
        and isinstance(data[0], Tensor | np.ndarray)
    )


def _split(
    name: str,
    value: Any,
    box: tuple[Bound, Bound] | None,
    dtype: torch.dtype,
    batch_size: int,
    keys: SampleKeys,
) -> MeasureSplit:
    if isinstance(value, Split):
        value = (value.images, value.labels)
    if isinstance(value, Dataset):
        value = DataLoader(value, batch_size=batch_size, shuffle=False)
    if isinstance(value, DataLoader):
        return _streamed(name, value, box, dtype, keys)
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise UsageError(
            f"split {name!r}: expected an (x, y) pair, a Split, a Dataset or a DataLoader, "
            f"got {type(value).__name__}"
        )
    x = inputs_tensor(name, value[0])
    y = labels_tensor(name, value[1], x.shape[0])
    if isinstance(value[1], Tensor) and value[1].device != x.device:
        raise UsageError(
            f"split {name!r}: x is on {x.device} but y is on {value[1].device}; "
            "put both on one device"
        )
    check_inputs(name, x, box)
    x = x.to(dtype) if x.is_floating_point() else x
    return MeasureSplit(x, y.to(x.device))


def inputs_tensor(name: str, x: Any) -> Tensor:
    """x as a tensor: floating-point or integer inputs, a batch [N, ...] with N >= 1."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "uif":
            raise UsageError(
                f"split {name!r}: x must hold floating-point or integer inputs, "
                f"got a numpy array of dtype {x.dtype}"
            )
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise UsageError(
            f"split {name!r}: x must be a torch tensor or a numpy array, got {type(x).__name__}"
        )
    if x.is_complex() or x.dtype == torch.bool:
        raise UsageError(
            f"split {name!r}: x must hold floating-point or integer inputs (uint8 images are "
            f"read as x / 255), got dtype {x.dtype}"
        )
    if x.ndim < 2 or x.shape[0] == 0 or x[0].numel() == 0:
        raise UsageError(
            f"split {name!r}: x must be a non-empty batch [N, ...] (vectors [N, D], sequences "
            f"[N, C, L], images [N, C, H, W], ...), got shape {tuple(x.shape)}"
        )
    return x


def labels_tensor(name: str, y: Any, n: int) -> Tensor:
    """y as int64 class indices [n] (any integer dtype; an [n, 1] column is squeezed)."""
    if isinstance(y, list | tuple):
        if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in y):
            raise UsageError(f"split {name!r}: y must hold integer class indices")
        y = torch.tensor([int(v) for v in y], dtype=torch.int64)
    elif isinstance(y, np.ndarray):
        if y.dtype.kind not in "iu":
            raise UsageError(
                f"split {name!r}: y must hold integer class indices, got a numpy array of "
                f"dtype {y.dtype}"
            )
        y = torch.from_numpy(np.ascontiguousarray(y))
    if not isinstance(y, Tensor):
        raise UsageError(
            f"split {name!r}: y must be a tensor, a numpy array or a list of class indices, "
            f"got {type(y).__name__}"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise UsageError(f"split {name!r}: y must hold integer class indices, got dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise UsageError(
            f"split {name!r}: y must have shape [{n}] (one label per input), got {tuple(y.shape)}"
        )
    return y.to(torch.int64)


def check_inputs(name: str, x: Tensor, box: tuple[Bound, Bound] | None) -> None:
    """Float inputs must be finite; float inputs and uint8 pixels (as x / 255) must lie in the
    box (other integer inputs are not perturbed, so the box does not apply)."""
    if x.is_floating_point():
        low, high = (float(v) for v in torch.aminmax(x.detach()))
        if not bool(torch.isfinite(x).all()):
            raise UsageError(f"split {name!r}: x holds NaN or infinite values")
        if box is None:
            return
        lo, hi = box
        if isinstance(lo, Tensor) or isinstance(hi, Tensor):
            inside = all(_inside(chunk, box) for chunk in x.split(CHECK_ROWS))
        else:
            inside = lo <= low and high <= hi
    else:
        if box is None or not is_pixels(x):
            return
        inside = all(_inside(chunk.float() / 255.0, box) for chunk in x.split(CHECK_ROWS))
        low, high = float(x.min()) / 255.0, float(x.max()) / 255.0
    if not inside:
        raise UsageError(
            f"split {name!r}: inputs span [{low:g}, {high:g}] outside the input bounds "
            f"{_describe(box)}; set measure's bounds=(lo, hi) to the inputs' range (per-channel "
            "tensors allowed), or bounds=None for an unbounded input space"
        )


def _inside(x: Tensor, box: tuple[Bound, Bound]) -> bool:
    lo, hi = box
    lo_t = torch.as_tensor(lo, dtype=x.dtype, device=x.device)
    hi_t = torch.as_tensor(hi, dtype=x.dtype, device=x.device)
    return bool(((x >= lo_t) & (x <= hi_t)).all())


def _describe(box: tuple[Bound, Bound]) -> str:
    lo, hi = box
    if isinstance(lo, Tensor) or isinstance(hi, Tensor):
        return "(per-channel)"
    return f"[{lo:g}, {hi:g}]"


# -- streamed splits ------------------------------------------------------------------------


def _streamed(
    name: str,
    loader: DataLoader[Any],
    box: tuple[Bound, Bound] | None,
    dtype: torch.dtype,
    keys: SampleKeys,
) -> MeasureSplit:
    """One reading pass: labels collected, every batch checked; later passes re-read."""
    if isinstance(loader.sampler, RandomSampler):
        raise UsageError(
            f"split {name!r}: the DataLoader shuffles (shuffle=True); measure reads each split "
            "several times and needs the same order every pass: use shuffle=False"
        )
    labels, shape = [], None
    for x, y in _batches(name, loader, keys):
        if shape is None:
            shape = tuple(x.shape[1:])
        elif tuple(x.shape[1:]) != shape:
            raise UsageError(
                f"split {name!r}: the loader's inputs change shape ({shape} then "
                f"{tuple(x.shape[1:])})"
            )
        check_inputs(name, x, box)
        labels.append(y)
    if shape is None:
        raise UsageError(f"split {name!r}: the DataLoader yields no batch")
    all_labels = torch.cat(labels)
    _check_complete(name, loader, len(all_labels))
    images = StreamedInputs(name, loader, all_labels, shape, dtype, keys)
    return MeasureSplit(images, all_labels)


def _check_complete(name: str, loader: DataLoader[Any], seen: int) -> None:
    """Refuse a loader that leaves samples out (``drop_last=True`` with a partial last batch)."""
    if not loader.drop_last:
        return
    try:
        size = len(loader.dataset)  # type: ignore[arg-type]
    except TypeError:
        size = None
    if size is None or seen < size:
        left = "an unknown number" if size is None else f"{size - seen} of {size}"
        raise UsageError(
            f"split {name!r}: the DataLoader has drop_last=True and leaves out {left} samples: "
            "pass a loader with drop_last=False (or the Dataset itself) to measure every sample"
        )


def pair(name: str, item: Any, keys: SampleKeys = DEFAULT_KEYS) -> tuple[Any, Any]:
    """(x, y) of one batch or sample: a pair/tuple (its first two items) or a mapping with an
    input key and a label key (``keys``, by default the first of :data:`INPUT_KEYS` and of
    :data:`LABEL_KEYS` present)."""
    if isinstance(item, Mapping):
        found = (
            _key(keys.input, INPUT_KEYS, item),
            _key(keys.label, LABEL_KEYS, item),
        )
        if None in found:
            raise UsageError(
                f"split {name!r}: dict samples with keys {sorted(map(str, item))} lack "
                f"{'the input' if found[0] is None else 'the label'} key: pass "
                f"input_key= and label_key= (defaults: the first of {', '.join(INPUT_KEYS)}; "
                f"of {', '.join(LABEL_KEYS)})"
            )
        return item[found[0]], item[found[1]]
    if isinstance(item, tuple | list) and len(item) >= 2:
        return item[0], item[1]
    raise UsageError(
        f"split {name!r}: the data must yield (x, y) pairs or dicts, got {type(item).__name__}"
    )


def _key(given: str | None, defaults: tuple[str, ...], item: Mapping[Any, Any]) -> Any:
    if given is not None:
        return given if given in item else None
    return next((k for k in defaults if k in item), None)


def _batches(
    name: str, loader: DataLoader[Any], keys: SampleKeys
) -> Iterator[tuple[Tensor, Tensor]]:
    for batch in loader:
        x, y = pair(name, batch, keys)
        x = inputs_tensor(name, x)
        yield x, labels_tensor(name, y, x.shape[0])


class StreamedInputs:
    """A DataLoader read as slices ``[start:stop]`` in increasing order (restarted at 0).

    Each batch read is checked against the labels of the first pass, so a loader whose order
    changes between passes is refused instead of measured wrongly.
    """

    def __init__(
        self,
        name: str,
        loader: DataLoader[Any],
        labels: Tensor,
        sample_shape: tuple[int, ...],
        dtype: torch.dtype,
        keys: SampleKeys = DEFAULT_KEYS,
    ) -> None:
        self.name = name
        self.keys = keys
        self.loader = loader
        self.labels = labels.cpu()
        self.shape = (int(labels.shape[0]), *sample_shape)
        self.dtype = dtype
        self._iterator: Iterator[tuple[Tensor, Tensor]] | None = None
        self._position = 0  # index of the first buffered row
        self._buffer: list[Tensor] = []

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice) -> Tensor:
        start, stop = index.start or 0, min(index.stop, self.shape[0])
        if self._iterator is None or start < self._position:
            self._iterator, self._position, self._buffer = (
                _batches(self.name, self.loader, self.keys),
                0,
                [],
            )
        buffered = sum(int(t.shape[0]) for t in self._buffer)
        while self._position + buffered < stop:
            x, y = next(self._iterator, (None, None))
            if x is None or y is None:
                raise UsageError(
                    f"split {self.name!r}: the loader yields fewer samples than on its first pass"
                )
            begin = self._position + buffered
            if not torch.equal(y.cpu(), self.labels[begin : begin + y.shape[0]]):
                raise UsageError(
                    f"split {self.name!r}: the loader yields another order or other data on a "
                    "second pass; measure needs the same order every pass (shuffle=False)"
                )
            self._buffer.append(x)
            buffered += int(x.shape[0])
        keep = torch.cat(self._buffer)[start - self._position :]
        self._buffer, self._position = [keep], start
        batch = keep[: stop - start]
        return batch.to(self.dtype) if batch.is_floating_point() else batch
