"""A seeded Gaussian-mixture image set of any shape and size, for tests and benchmarks."""

from __future__ import annotations

import torch

from ncrobust.data.containers import ImageDataset, Split, channel_stats


def synthetic_dataset(
    num_classes: int = 10,
    image_shape: tuple[int, int, int] = (3, 32, 32),
    n_per_class: int = 100,
    test_per_class: int | None = None,
    seed: int = 0,
    noise: float = 0.2,
) -> ImageDataset:
    """Balanced classes around prototypes drawn uniformly in [0, 1], plus ``noise`` * N(0, I),
    clamped and quantised to uint8; the same seed gives the same data on every device.

    ``test_per_class`` defaults to a fifth of ``n_per_class``, rounded up. Labels cycle
    0, 1, ..., C-1, 0, 1, ... so any prefix of a split is (nearly) balanced.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) of positive sizes, got {image_shape}")
    if n_per_class < 0:
        raise ValueError(f"n_per_class must be >= 0, got {n_per_class}")
    if test_per_class is None:
        test_per_class = -(-n_per_class // 5)
    if test_per_class < 0:
        raise ValueError(f"test_per_class must be >= 0, got {test_per_class}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.rand((num_classes, *shape), generator=generator)
    train = _sample(prototypes, n_per_class, noise, generator)
    test = _sample(prototypes, test_per_class, noise, generator)
    if len(train):
        mean, std = channel_stats(train.images)
    else:  # nothing to estimate from: the neutral mid-grey constants
        mean, std = (0.5,) * shape[0], (0.5,) * shape[0]
    return ImageDataset(
        name="synthetic",
        train=train,
        test=test,
        num_classes=num_classes,
        mean=mean,
        std=std,
        class_names=tuple(str(c) for c in range(num_classes)),
    )


def _sample(
    prototypes: torch.Tensor, per_class: int, noise: float, generator: torch.Generator
) -> Split:
    num_classes, shape = prototypes.shape[0], tuple(prototypes.shape[1:])
    images = torch.empty((per_class * num_classes, *shape), dtype=torch.uint8)
    for c in range(num_classes):  # one class at a time keeps the float buffer small
        draw = torch.randn((per_class, *shape), generator=generator)
        draw.mul_(noise).add_(prototypes[c]).clamp_(0.0, 1.0).mul_(255.0).round_()
        images[c::num_classes] = draw.to(torch.uint8)  # interleave: sample i has label i mod C
    labels = torch.arange(per_class * num_classes, dtype=torch.int64) % num_classes
    return Split(images, labels)
