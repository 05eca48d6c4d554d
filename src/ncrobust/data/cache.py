"""Decoded datasets cached as one safetensors file of uint8/int64 tensors, written atomically.

Decoding CIFAR pickles or 13k JPEGs takes from seconds to minutes; the cache makes later runs
start in about a second. A cache is written under a temporary name and moved into place, and
one that fails to read or validate is reported and rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ncrobust.atomic import UMASK
from ncrobust.data.containers import Split

CACHE_FORMAT = "ncrobust-data-1"
CACHE_FOLDER = "ncrobust-cache"
_TENSORS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True, eq=False)
class Decoded:
    """What a decoder produces and the cache stores: both splits and the class names."""

    train: Split
    test: Split
    class_names: tuple[str, ...]


class CacheError(Exception):
    """A cache file that cannot be read or does not hold a valid dataset."""


def cache_path(root: Path, key: str) -> Path:
    """Where the cache for ``key`` (e.g. ``cifar10``) lives under the data directory."""
    return root / CACHE_FOLDER / f"{key}.safetensors"


def write_cache(path: Path, decoded: Decoded) -> None:
    """Write ``decoded`` to ``path`` through a temporary file in the same directory."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, tensor in (
        ("train_images", decoded.train.images),
        ("train_labels", decoded.train.labels),
        ("test_images", decoded.test.images),
        ("test_labels", decoded.test.labels),
    ):
        tensor = tensor.cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in storages:  # safetensors refuses tensors that share memory (e.g. views)
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    metadata = {"format": CACHE_FORMAT, "class_names": json.dumps(list(decoded.class_names))}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~UMASK)  # readable like any file here (mkstemp: 0600)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def read_cache(path: Path, image_shape: tuple[int, int, int] | None = None) -> Decoded:
    """Read and validate a cache; CacheError when it is unreadable, stale or inconsistent."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as stream:
            metadata = stream.metadata() or {}
            if metadata.get("format") != CACHE_FORMAT:
                raise CacheError(f"format {metadata.get('format')!r}, expected {CACHE_FORMAT!r}")
            missing = set(_TENSORS) - set(stream.keys())
            if missing:
                raise CacheError(f"missing tensors {sorted(missing)}")
            # get_tensor maps the file; the copy frees the data from later changes to the file
            tensors = {name: stream.get_tensor(name).clone() for name in _TENSORS}
        class_names = tuple(str(name) for name in json.loads(metadata["class_names"]))
        train = Split(tensors["train_images"], tensors["train_labels"])
        test = Split(tensors["test_images"], tensors["test_labels"])
    except CacheError:
        raise
    except Exception as exc:  # safetensors, json and Split validation errors alike
        raise CacheError(str(exc)) from exc
    for name, split in (("train", train), ("test", test)):
        shape = tuple(split.images.shape[1:])
        if image_shape is not None and shape != image_shape:
            raise CacheError(f"{name} images are {shape}, not {image_shape}")
        labels = split.labels
        if len(split) and (int(labels.min()) < 0 or int(labels.max()) >= len(class_names)):
            raise CacheError(f"{name} labels outside [0, {len(class_names)})")
    return Decoded(train, test, class_names)


def cached(
    path: Path, build: Callable[[], Decoded], image_shape: tuple[int, int, int] | None = None
) -> Decoded:
    """The cache at ``path`` when valid; otherwise ``build()``, saved there for the next run."""
    if path.is_file():
        try:
            return read_cache(path, image_shape)
        except CacheError as exc:
            warnings.warn(f"ignoring unusable cache {path} ({exc}); rebuilding it", stacklevel=3)
    decoded = build()
    try:
        write_cache(path, decoded)
    except OSError as exc:
        message = f"could not write cache {path} ({exc}); the next run decodes again"
        warnings.warn(message, stacklevel=3)
    return decoded
