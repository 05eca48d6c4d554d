"""Mini-batches taken by index from a split held whole on its device (no DataLoader)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ncrobust.data.containers import Split, to_pixels

AUGMENT_PADDING = 4  # random-crop padding in pixels (zero padding, as torchvision's RandomCrop)


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches ``batches`` yields for ``n`` samples."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def shard_rows(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of a batch of ``total`` that rank ``rank`` of ``world_size`` takes:
    contiguous, disjoint, covering the batch, sizes differing by at most one."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of {world_size} ranks")
    return rank * total // world_size, (rank + 1) * total // world_size


def batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    augment: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(x, y)``: x float32 ``[B, C, H, W]`` in [0, 1], y int64, on the split device.

    All randomness (the permutation, then the augmentation draws) comes from ``generator``, which
    must be a CPU generator (the global one when None), so an epoch is identical on every device;
    it is drawn once per epoch and moved to the device in one copy. ``augment`` applies a random
    crop with 4 pixels of zero padding and a horizontal flip with probability 1/2, batched on the
    device; the paper trains without augmentation, so it is off by default.

    ``shard=(rank, world_size)`` yields only that rank's rows (:func:`shard_rows`) of each global
    batch of ``batch_size``: every rank draws the same permutation and augmentation, so the
    ranks' batches together are exactly the one-process batches.
    """
    if not isinstance(split, Split):
        raise ValueError(f"batches needs a Split, got {type(split).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            f"batches draws on a CPU generator so shuffles match across devices; "
            f"got one on {generator.device}"
        )
    shard_rows(batch_size, *shard)  # checks the rank
    return _epoch(split, batch_size, shuffle, generator, drop_last, augment, shard)


def _epoch(
    split: Split,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    drop_last: bool,
    augment: bool,
    shard: tuple[int, int],
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    n, device = len(split), split.device
    order = torch.randperm(n, generator=generator).to(device) if shuffle else None
    if augment:
        span = 2 * AUGMENT_PADDING + 1
        offsets = torch.randint(0, span, (n, 2), generator=generator).to(device)
        flips = torch.randint(0, 2, (n,), generator=generator, dtype=torch.bool).to(device)
    stop = num_batches(n, batch_size, drop_last) * batch_size
    for first in range(0, min(stop, n), batch_size):
        low, high = shard_rows(min(first + batch_size, n) - first, *shard)
        start, end = first + low, first + high
        if order is None:
            images, labels = split.images[start:end], split.labels[start:end]
        else:
            index = order[start:end]
            images = split.images.index_select(0, index)
            labels = split.labels.index_select(0, index)
        if augment:
            images = crop_flip(images, offsets[start:end], flips[start:end], AUGMENT_PADDING)
        yield to_pixels(images, images.device), labels


def crop_flip(
    images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int
) -> torch.Tensor:
    """Zero-pad by ``padding``, crop each image at its (row, col) ``offsets`` and mirror it where
    ``flips`` is set: one gather for the whole batch."""
    count, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, 0, None] + torch.arange(height, device=images.device)
    cols = offsets[:, 1, None] + torch.arange(width, device=images.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # a flip is a reversed column index
    # flat index into each padded plane; gather is several times faster than advanced indexing
    flat = rows[:, :, None] * (width + 2 * padding) + cols[:, None, :]
    flat = flat.reshape(count, 1, height * width).expand(count, channels, height * width)
    return padded.reshape(count, channels, -1).gather(2, flat).view(count, channels, height, width)
