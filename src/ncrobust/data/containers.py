"""The two containers every part of ncrobust passes around: a split and a dataset, as tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True, eq=False)
class Split:
    """One split held whole as tensors: uint8 images ``[N, C, H, W]`` and int64 labels ``[N]``.

    Keeping the split as one tensor (on the training device) lets batches be taken by index,
    with no DataLoader and no per-sample Python.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or not isinstance(self.labels, torch.Tensor):
            raise ValueError("Split needs torch tensors for images and labels")
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"Split images must be uint8 [N, C, H, W], got {self.images.dtype} "
                f"with shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(
                f"Split labels must be int64 [N], got {self.labels.dtype} "
                f"with shape {tuple(self.labels.shape)}"
            )
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"Split has {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        if self.images.device != self.labels.device:
            raise ValueError(
                f"Split images on {self.images.device} but labels on {self.labels.device}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        """The device both tensors live on."""
        return self.images.device

    def to(self, device: torch.device | str) -> Split:
        """This split with both tensors on ``device`` (the same object if already there)."""
        device = torch.device(device)
        if self.images.device == device:
            return self
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A classification dataset: train and test splits, class count and normalisation constants.

    ``mean`` and ``std`` are per channel in [0, 1] pixel units; the model applies them inside
    its forward, so attacks and noise work on [0, 1] pixels.
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        shape_train, shape_test = tuple(self.train.images.shape[1:]), self.test.images.shape[1:]
        if shape_train != tuple(shape_test):
            raise ValueError(
                f"train images {shape_train} and test images {tuple(shape_test)} differ in shape"
            )
        channels = shape_train[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(
                f"mean/std need one value per channel ({channels}), "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class names given for {self.num_classes} classes"
            )
        for split_name, split in (("train", self.train), ("test", self.test)):
            if len(split) == 0:
                continue
            low, high = int(split.labels.min()), int(split.labels.max())
            if low < 0 or high >= self.num_classes:
                raise ValueError(
                    f"{split_name} labels span [{low}, {high}] outside [0, {self.num_classes})"
                )

    @property
    def channels(self) -> int:
        """Number of image channels C."""
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        """Side of the square images (H == W); ValueError for non-square images."""
        height, width = self.train.images.shape[2:]
        if height != width:
            raise ValueError(f"{self.name} images are {height}x{width}, not square")
        return int(height)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        channels, height, width = self.train.images.shape[1:]
        return int(channels), int(height), int(width)

    def split(self, name: str) -> Split:
        """The split called ``name``: ``"train"`` or ``"test"``."""
        if name == "train":
            return self.train
        if name == "test":
            return self.test
        raise ValueError(f"unknown split {name!r} (use 'train' or 'test')")

    def to(self, device: torch.device | str) -> ImageDataset:
        """This dataset with both splits on ``device``."""
        return ImageDataset(
            name=self.name,
            train=self.train.to(device),
            test=self.test.to(device),
            num_classes=self.num_classes,
            mean=self.mean,
            std=self.std,
            class_names=self.class_names,
        )


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (population, as the released code's constants) of uint8 images.

    Values are in [0, 1] pixel units, computed in float64; a constant channel gets std 1 so that
    normalising by it stays finite.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[0] == 0:
        raise ValueError("channel_stats needs a non-empty uint8 [N, C, H, W] tensor")
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for channel in range(images.shape[1]):
        # a 256-bin histogram gives exact float64 moments without a float copy of the images
        counts = torch.bincount(images[:, channel].reshape(-1), minlength=256).cpu()
        counts = counts.to(torch.float64) / counts.sum()
        mean = float((counts * levels).sum())
        std = float((counts * (levels - mean) ** 2).sum().sqrt())
        means.append(mean)
        stds.append(std if std > 0 else 1.0)
    return tuple(means), tuple(stds)


def to_pixels(
    images: torch.Tensor, device: torch.device | str, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Inputs on ``device``: uint8 images ([N, C, H, W] or [N, H, W]) become pixels x / 255 in
    [0, 1] of ``dtype``, float inputs are converted to ``dtype``, other integer inputs (token
    ids, counts; uint8 [N, D]) pass untouched (one conversion for training, probes, attacks).

    uint8 pixels are looked up in a 256-entry table divided on the CPU: CUDA computes a
    division by a scalar as a multiplication by its reciprocal, which differs from the CPU's
    quotient in the last bit for some values, so a division on the device would make the same
    epoch differ between devices.
    """
    x = images.to(device, non_blocking=True)
    if x.is_floating_point():
        return x.to(dtype)
    return _pixel_table(x.device, dtype)[x.long()] if is_pixels(x) else x


def is_pixels(x: torch.Tensor) -> bool:
    """Whether a batch is uint8 pixels: uint8 and image-shaped (at least [N, H, W])."""
    return x.dtype == torch.uint8 and x.ndim >= 3


_PIXEL_TABLES: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _pixel_table(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``arange(256) / 255`` in ``dtype``, computed on the CPU, cached per device."""
    key = (device, dtype)
    if key not in _PIXEL_TABLES:
        table = torch.arange(256, dtype=dtype).div_(255.0)
        _PIXEL_TABLES[key] = table.to(device)
    return _PIXEL_TABLES[key]
