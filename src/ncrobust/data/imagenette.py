"""ImageNette (160 px variant) from its archive or an extracted folder tree into uint8 tensors.

As the released code: ImageFolder semantics (classes = sorted folder names of ``train/``,
files in sorted order), images converted to RGB and center-cropped to 160x160, no resize. The
160 px variant has its shorter side at 160 already, so the crop is exactly the released
``CenterCrop(160)``; an image whose shorter side is below 160 (not in the official data) is
first resized so its shorter side is 160 instead of being zero-padded.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ncrobust.data.cache import Decoded, cache_path, cached
from ncrobust.data.containers import ImageDataset, Split
from ncrobust.data.fetch import ensure_archive, extract
from ncrobust.data.sources import SOURCES
from ncrobust.errors import UsageError

CROP = 160
MEAN = (0.5, 0.5, 0.5)  # the released code's constants for ImageNette
STD = (0.5, 0.5, 0.5)
_log = logging.getLogger(__name__)


def load_imagenette(root: Path, download: bool) -> ImageDataset:
    """ImageNette from the cache in ``root``, else decoded once from ``root/imagenette2-160``
    (or ``root`` itself when it holds ``train/`` and ``val/``), extracted from the verified
    archive (downloaded when allowed) when neither exists."""

    def build() -> Decoded:
        return decode_tree(ensure_tree(root, download))

    decoded = cached(cache_path(root, f"imagenette-{CROP}"), build, (3, CROP, CROP))
    return ImageDataset(
        name="imagenette",
        train=decoded.train,
        test=decoded.test,
        num_classes=len(decoded.class_names),
        mean=MEAN,
        std=STD,
        class_names=decoded.class_names,
    )


def ensure_tree(root: Path, download: bool) -> Path:
    """The folder holding ``train/`` and ``val/``, extracting (and downloading) if needed."""
    source = SOURCES["imagenette"]
    for candidate in (root / source.folder, root):
        if (candidate / "train").is_dir() and (candidate / "val").is_dir():
            return candidate
    archive = ensure_archive(source, root, download)
    tree = extract(archive, root, source.folder)
    if not ((tree / "train").is_dir() and (tree / "val").is_dir()):
        raise UsageError(f"{archive} extracted, but {tree}/ has no train/ and val/ folders")
    return tree


def decode_tree(tree: Path) -> Decoded:
    """Decode ``tree/train`` and ``tree/val`` (the test split) with classes from ``train/``."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(str(tree / "train"))
        val_classes, _ = find_classes(str(tree / "val"))
        if val_classes != classes:
            raise UsageError(f"{tree}/val has classes {val_classes}, train/ has {classes}")
        splits = [
            make_dataset(str(tree / part), class_to_idx, extensions=IMG_EXTENSIONS)
            for part in ("train", "val")
        ]
    except FileNotFoundError as exc:
        raise UsageError(f"ImageNette tree {tree}: {exc}") from exc
    total = sum(len(samples) for samples in splits)
    _log.info("decoding %d ImageNette images from %s once (cached afterwards)", total, tree)
    train, test = (_decode_samples(samples) for samples in splits)
    return Decoded(train, test, tuple(classes))


def _decode_samples(samples: list[tuple[str, int]]) -> Split:
    images = torch.empty((len(samples), 3, CROP, CROP), dtype=torch.uint8)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)

    def fill(index: int) -> None:
        images[index] = decode_image_file(samples[index][0])

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without holding the GIL
        list(pool.map(fill, range(len(samples))))
    return Split(images, labels)


def decode_image_file(path: str) -> torch.Tensor:
    """One image file as uint8 ``[3, 160, 160]``: RGB, shorter side at least 160, center crop."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except OSError as exc:  # PIL.UnidentifiedImageError included
        raise UsageError(f"could not decode image {path}: {exc}") from exc
    if min(image.size) < CROP:
        image = TF.resize(image, CROP)  # shorter side to 160, aspect kept
    image = TF.center_crop(image, [CROP, CROP])
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
