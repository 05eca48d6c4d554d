"""synthetic_dataset: seeded, balanced Gaussian-mixture images of any shape."""

from __future__ import annotations

import pytest
import torch

from ncrobust.data import load_dataset, synthetic_dataset
from ncrobust.errors import UsageError


def test_shapes_balance_and_default_test_size() -> None:
    data = synthetic_dataset(num_classes=4, image_shape=(2, 6, 5), n_per_class=11, seed=3)
    assert data.train.images.shape == (44, 2, 6, 5) and data.train.images.dtype == torch.uint8
    assert data.test.images.shape == (12, 2, 6, 5)  # ceil(11 / 5) = 3 per class
    assert torch.bincount(data.train.labels).tolist() == [11] * 4
    assert torch.bincount(data.test.labels).tolist() == [3] * 4
    assert data.train.labels[:8].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]  # interleaved
    assert data.num_classes == 4 and data.channels == 2 and len(data.mean) == 2


def test_same_seed_same_data_other_seed_other_data() -> None:
    first = synthetic_dataset(num_classes=3, image_shape=(1, 4, 4), n_per_class=5, seed=1)
    torch.manual_seed(123)  # the global RNG must not matter
    again = synthetic_dataset(num_classes=3, image_shape=(1, 4, 4), n_per_class=5, seed=1)
    other = synthetic_dataset(num_classes=3, image_shape=(1, 4, 4), n_per_class=5, seed=2)
    assert torch.equal(first.train.images, again.train.images)
    assert torch.equal(first.test.images, again.test.images)
    assert not torch.equal(first.train.images, other.train.images)


def test_classes_are_separated_by_their_prototypes() -> None:
    data = synthetic_dataset(num_classes=5, image_shape=(3, 8, 8), n_per_class=40, seed=0)
    x = data.train.images.float().flatten(1)
    centres = torch.stack([x[data.train.labels == c].mean(0) for c in range(5)])
    nearest = torch.cdist(data.test.images.float().flatten(1), centres).argmin(1)
    assert (nearest == data.test.labels).float().mean() == 1.0


def test_statistics_come_from_train_and_noise_zero_gives_prototypes() -> None:
    data = synthetic_dataset(num_classes=2, image_shape=(3, 4, 4), n_per_class=6, noise=0.0)
    pixels = data.train.images.double() / 255
    assert data.mean == pytest.approx(tuple(pixels.mean(dim=(0, 2, 3)).tolist()), rel=1e-12)
    assert torch.equal(data.train.images[0], data.train.images[2])  # same class, no noise


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="n_per_class"):
        synthetic_dataset(n_per_class=-1)
    with pytest.raises(ValueError, match="test_per_class"):
        synthetic_dataset(test_per_class=-2)
    with pytest.raises(ValueError, match="num_classes"):
        synthetic_dataset(num_classes=0)
    with pytest.raises(ValueError, match="image_shape"):
        synthetic_dataset(image_shape=(3, 0, 4))
    with pytest.raises(ValueError, match="noise"):
        synthetic_dataset(noise=-0.1)


def test_through_load_dataset() -> None:
    data = load_dataset("synthetic", num_classes=3, image_shape=(1, 8, 8), n_per_class=4, seed=5)
    direct = synthetic_dataset(num_classes=3, image_shape=(1, 8, 8), n_per_class=4, seed=5)
    assert torch.equal(data.train.images, direct.train.images) and data.name == "synthetic"
    with pytest.raises(UsageError, match="unknown option"):
        load_dataset("synthetic", classes=3)
