"""Split and ImageDataset: validation, device moves, properties and channel statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncrobust.data import ImageDataset, Split, channel_stats


def _split(n: int, shape: tuple[int, int, int] = (3, 4, 4), classes: int = 3) -> Split:
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8)
    return Split(images, torch.arange(n) % classes)


def _dataset(**changes: object) -> ImageDataset:
    fields: dict[str, object] = {
        "name": "toy",
        "train": _split(6),
        "test": _split(3),
        "num_classes": 3,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
    }
    fields.update(changes)
    return ImageDataset(**fields)  # type: ignore[arg-type]


def test_split_rejects_wrong_dtypes_shapes_and_lengths() -> None:
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="uint8"):
        Split(images.float(), labels)
    with pytest.raises(ValueError, match="uint8"):
        Split(images[:, 0], labels)
    with pytest.raises(ValueError, match="int64"):
        Split(images, labels.int())
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        Split(images, labels[:3])
    assert len(Split(images, labels)) == 4


def test_dataset_properties_and_split_lookup() -> None:
    dataset = _dataset(class_names=("a", "b", "c"))
    assert dataset.channels == 3 and dataset.image_size == 4
    assert dataset.image_shape == (3, 4, 4)
    assert dataset.split("train") is dataset.train and dataset.split("test") is dataset.test
    with pytest.raises(ValueError, match="unknown split 'val'"):
        dataset.split("val")
    moved = dataset.to("cpu")
    assert moved.train.images.device.type == "cpu" and moved.class_names == ("a", "b", "c")
    assert torch.equal(moved.test.labels, dataset.test.labels)


def test_dataset_rejects_inconsistent_fields() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        _dataset(test=_split(3, shape=(3, 5, 5)))
    with pytest.raises(ValueError, match="one value per channel"):
        _dataset(mean=(0.5,))
    with pytest.raises(ValueError, match="std must be positive"):
        _dataset(std=(0.25, 0.0, 0.25))
    with pytest.raises(ValueError, match="outside"):
        _dataset(num_classes=2)
    with pytest.raises(ValueError, match="class names"):
        _dataset(class_names=("a",))
    with pytest.raises(ValueError, match="not square"):
        _ = _dataset(train=_split(6, (3, 4, 5)), test=_split(3, (3, 4, 5))).image_size


def test_channel_stats_match_numpy_population_moments() -> None:
    images = torch.randint(0, 256, (50, 2, 6, 5), dtype=torch.uint8)
    images[:, 1] = 77  # a constant channel
    mean, std = channel_stats(images)
    pixels = images.numpy().astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-12)
    assert std[0] == pytest.approx(pixels[:, 0].std(), rel=1e-12)
    assert std[1] == 1.0  # constant channel: 1 keeps normalisation finite
    with pytest.raises(ValueError, match="uint8"):
        channel_stats(images.float())


@pytest.mark.gpu
def test_to_cuda_round_trip() -> None:
    dataset = _dataset().to("cuda")
    assert dataset.train.images.is_cuda and dataset.test.labels.is_cuda
    assert torch.equal(dataset.to("cpu").train.images, dataset.train.images.cpu())
