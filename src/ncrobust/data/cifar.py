"""CIFAR-10 and CIFAR-100 from the official python-pickle archives into uint8 tensors."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncrobust.data.cache import Decoded, cache_path, cached
from ncrobust.data.containers import ImageDataset, Split
from ncrobust.data.fetch import ensure_archive, extract, folder_verified
from ncrobust.data.sources import SOURCES
from ncrobust.errors import UsageError


@dataclass(frozen=True)
class CifarLayout:
    """Which pickles of the extracted folder hold what, and the released code's constants."""

    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes
    meta_file: str
    names_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key=b"labels",
        meta_file="batches.meta",
        names_key=b"label_names",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2471, 0.2435, 0.2616),
    ),
    "cifar100": CifarLayout(
        train_files=("train",),
        test_files=("test",),
        label_key=b"fine_labels",
        meta_file="meta",
        names_key=b"fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}
IMAGE_SHAPE = (3, 32, 32)


def load_cifar(name: str, root: Path, download: bool) -> ImageDataset:
    """CIFAR-10/100 from the cache in ``root``, else from its verified archive (downloaded when
    allowed), decoded once and cached."""
    layout = LAYOUTS[name]

    def build() -> Decoded:
        return decode_folder(ensure_folder(name, root, download), layout)

    decoded = cached(cache_path(root, name), build, IMAGE_SHAPE)
    if len(decoded.class_names) != layout.num_classes:
        raise UsageError(f"{name} data in {root} has {len(decoded.class_names)} classes")
    return ImageDataset(
        name=name,
        train=decoded.train,
        test=decoded.test,
        num_classes=layout.num_classes,
        mean=layout.mean,
        std=layout.std,
        class_names=decoded.class_names,
    )


def ensure_folder(name: str, root: Path, download: bool) -> Path:
    """The md5-verified extracted folder, extracting (and downloading) the archive if needed."""
    source = SOURCES[name]
    folder = root / source.folder
    if folder_verified(source, folder):
        return folder
    archive = ensure_archive(source, root, download)
    extract(archive, root, source.folder)
    if not folder_verified(source, folder):
        raise UsageError(
            f"{archive} extracted, but {folder}/ does not hold the expected files "
            f"{sorted(source.file_md5)} with their md5; delete both and download again"
        )
    return folder


def decode_folder(folder: Path, layout: CifarLayout) -> Decoded:
    """Read the pickled batches of an extracted CIFAR folder into uint8 ``[N, 3, 32, 32]``."""
    train = _read_split(folder, layout.train_files, layout.label_key)
    test = _read_split(folder, layout.test_files, layout.label_key)
    names = _unpickle(folder / layout.meta_file).get(layout.names_key)
    if not isinstance(names, list):
        raise UsageError(f"{folder / layout.meta_file} has no {layout.names_key!r} list")
    class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return Decoded(train, test, class_names)


def _read_split(folder: Path, files: tuple[str, ...], label_key: bytes) -> Split:
    images, labels = [], []
    for name in files:
        batch = _unpickle(folder / name)
        data = np.asarray(batch.get(b"data"))
        targets = np.asarray(batch.get(label_key))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise UsageError(f"{folder / name}: b'data' is not uint8 N x 3072")
        if targets.shape != (data.shape[0],):
            raise UsageError(f"{folder / name}: {label_key!r} does not match b'data' in length")
        # each row is the red, green then blue 32x32 plane, row-major: exactly [3, 32, 32]
        images.append(torch.from_numpy(data.reshape(-1, *IMAGE_SHAPE).copy()))
        labels.append(torch.from_numpy(targets.astype(np.int64)))
    return Split(torch.cat(images), torch.cat(labels))


def _unpickle(path: Path) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as stream:
            content = pickle.load(stream, encoding="bytes")  # md5-verified official file
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise UsageError(f"could not read {path}: {exc}") from exc
    if not isinstance(content, dict):
        raise UsageError(f"{path} is not a pickled dict")
    return content
