"""ImageNette through the real loading path on a tiny folder tree and archive."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ncrobust.data import imagenette as imagenette_module
from ncrobust.data import load_dataset
from ncrobust.data.cache import cache_path
from ncrobust.errors import UsageError


def _crop(array: np.ndarray, top: int, left: int) -> torch.Tensor:
    return torch.from_numpy(array[top : top + 160, left : left + 160].copy()).permute(2, 0, 1)


def test_tree_decodes_with_imagefolder_order_and_center_crop(
    tmp_path: Path, imagenette_tree
) -> None:
    pixels = imagenette_tree(tmp_path / "data")
    dataset = load_dataset("imagenette", data_dir=tmp_path / "data", download=False)
    assert dataset.class_names == ("n01440764", "n02102040", "n03000684")  # sorted folders
    assert dataset.image_shape == (3, 160, 160)
    assert dataset.mean == (0.5, 0.5, 0.5) and dataset.std == (0.5, 0.5, 0.5)
    # classes sorted, files sorted within a class: c.JPEG, z.png | d.png | a.png, b.png
    assert dataset.train.labels.tolist() == [0, 0, 1, 2, 2]
    assert dataset.test.labels.tolist() == [0, 1, 2]
    train = dataset.train.images
    # z.png is 160 wide, 239 high: offset round((239 - 160) / 2) = round(39.5) = 40 (half to even)
    assert torch.equal(train[1], _crop(pixels["train/n01440764/z.png"], 40, 0))
    # d.png is 200x300: rows from 70, columns from 20
    assert torch.equal(train[2], _crop(pixels["train/n02102040/d.png"], 70, 20))
    # a.png is 213 wide: round(26.5) = 26
    assert torch.equal(train[3], _crop(pixels["train/n03000684/a.png"], 0, 26))
    assert torch.equal(train[4], _crop(pixels["train/n03000684/b.png"], 0, 0))
    # the JPEG (240 wide) is lossy: of all column offsets, 40 matches the decoded crop best
    source = pixels["train/n01440764/c.JPEG"]
    error = {
        left: (train[0].float() - _crop(source, 0, left).float()).abs().mean().item()
        for left in range(36, 45)
    }
    assert min(error, key=error.__getitem__) == 40
    # val v1.png, 170x160: columns from 5
    assert torch.equal(dataset.test.images[0], _crop(pixels["val/n01440764/v1.png"], 0, 5))


def test_small_image_is_resized_to_shorter_side_160_not_padded(
    tmp_path: Path, imagenette_tree
) -> None:
    imagenette_tree(tmp_path)
    dataset = load_dataset("imagenette", data_dir=tmp_path, download=False)
    small = dataset.test.images[2]  # v3.png is 120x200: resized to 160x267, then cropped
    assert small.shape == (3, 160, 160)
    # no zero border from padding: the top row varies like the source's red channel does
    assert small[:, :, 0].float().mean() > 0 and small[:, :, -1].float().mean() > 0
    assert small[0, 0].unique().numel() == 1  # red depends on the row only, before and after


def test_tree_given_directly_as_data_dir(tmp_path: Path, imagenette_tree) -> None:
    imagenette_tree(tmp_path)
    tree = tmp_path / "imagenette2-160"
    dataset = load_dataset("imagenette", data_dir=tree, download=False)  # holds train/ and val/
    assert len(dataset.train) == 5 and len(dataset.test) == 3
    assert cache_path(tree, "imagenette-160").is_file()


def test_archive_is_verified_extracted_and_cached(
    tmp_path: Path, imagenette_tree, register_source, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = tmp_path / "staging"
    imagenette_tree(staging)
    root = tmp_path / "data"
    root.mkdir()
    archive = root / "imagenette2-160.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / "imagenette2-160", arcname="imagenette2-160")
    register_source("imagenette", archive)
    first = load_dataset("imagenette", data_dir=root, download=False)
    assert (root / "imagenette2-160" / "train" / "n01440764").is_dir()
    assert len(first.train) == 5

    def refuse(*args: object) -> None:
        raise AssertionError("decoded again although a cache exists")

    monkeypatch.setattr(imagenette_module, "decode_image_file", refuse)
    monkeypatch.setattr(imagenette_module, "decode_tree", refuse)
    second = load_dataset("imagenette", data_dir=root, download=False)
    assert torch.equal(first.train.images, second.train.images)
    assert second.class_names == first.class_names


def test_corrupt_archive_and_missing_data_are_reported(tmp_path: Path, register_source) -> None:
    with pytest.raises(UsageError) as caught:
        load_dataset("imagenette", data_dir=tmp_path, download=False)
    message = str(caught.value)
    assert str(tmp_path / "imagenette2-160.tgz") in message
    assert "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz" in message
    archive = tmp_path / "imagenette2-160.tgz"
    archive.write_bytes(b"not a tarball")
    with pytest.raises(UsageError, match="corrupt"):
        load_dataset("imagenette", data_dir=tmp_path, download=False)
    register_source("imagenette", archive)  # checksum matches, content is not a tar archive
    with pytest.raises(UsageError, match="could not extract"):
        load_dataset("imagenette", data_dir=tmp_path, download=False)


def test_val_classes_must_match_train(tmp_path: Path, imagenette_tree) -> None:
    imagenette_tree(tmp_path)
    extra = tmp_path / "imagenette2-160" / "val" / "n09999999"
    extra.mkdir()
    with pytest.raises(UsageError, match="classes"):
        load_dataset("imagenette", data_dir=tmp_path, download=False)


def test_undecodable_image_is_reported(tmp_path: Path, imagenette_tree) -> None:
    imagenette_tree(tmp_path)
    broken = tmp_path / "imagenette2-160" / "train" / "n01440764" / "broken.JPEG"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(UsageError, match=r"broken\.JPEG"):
        load_dataset("imagenette", data_dir=tmp_path, download=False)
    assert not cache_path(tmp_path, "imagenette-160").exists()


def test_real_source_matches_torchvision() -> None:
    from torchvision import datasets

    from ncrobust.data.sources import SOURCES

    archives = getattr(getattr(datasets, "Imagenette", None), "_ARCHIVES", None)
    if archives is None:
        pytest.skip("this torchvision has no Imagenette table to compare with")
    url, md5 = archives["160px"]
    assert (SOURCES["imagenette"].url, SOURCES["imagenette"].md5) == (url, md5)
