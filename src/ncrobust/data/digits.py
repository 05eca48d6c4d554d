"""The embedded default: scikit-learn's bundled 8x8 handwritten digits (no download)."""

from __future__ import annotations

import numpy as np
import torch

from ncrobust.data.containers import ImageDataset, Split, channel_stats

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits_dataset() -> ImageDataset:
    """1,797 digits as uint8 ``[N, 1, 8, 8]`` (round(v * 255 / 16), half to even), split 80/20
    per class with a fixed seed, so the split never depends on the global RNG."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    pixels = np.asarray(bunch.images, dtype=np.float64)  # integers 0..16
    images = torch.from_numpy(np.round(pixels * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    train_index, test_index = train_test_split(
        np.arange(len(labels)),
        test_size=TEST_FRACTION,
        stratify=bunch.target,
        random_state=SPLIT_SEED,
    )
    train_index, test_index = (torch.from_numpy(np.sort(i)) for i in (train_index, test_index))
    train = Split(images[train_index], labels[train_index])
    test = Split(images[test_index], labels[test_index])
    mean, std = channel_stats(train.images)
    return ImageDataset(
        name="digits",
        train=train,
        test=test,
        num_classes=10,
        mean=mean,
        std=std,
        class_names=tuple(str(d) for d in range(10)),
    )
