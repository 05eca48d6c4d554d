"""CIFAR-10/100 through the real loading path on tiny archives in the official format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ncrobust.data import cifar as cifar_module
from ncrobust.data import load_dataset
from ncrobust.data.cache import cache_path
from ncrobust.data.sources import SOURCES
from ncrobust.errors import UsageError


def _check_roundtrip(dataset, fake) -> None:
    assert torch.equal(dataset.train.images, torch.from_numpy(fake.train_images))
    assert torch.equal(dataset.train.labels, torch.from_numpy(fake.train_labels))
    assert torch.equal(dataset.test.images, torch.from_numpy(fake.test_images))
    assert torch.equal(dataset.test.labels, torch.from_numpy(fake.test_labels))
    assert dataset.class_names == tuple(fake.class_names)
    assert dataset.train.images.dtype == torch.uint8
    assert dataset.train.labels.dtype == torch.int64


def test_cifar10_pixels_and_labels_round_trip(fake_cifar10, tmp_path: Path) -> None:
    dataset = load_dataset("cifar10", data_dir=tmp_path / "data", download=False)
    _check_roundtrip(dataset, fake_cifar10)
    assert len(dataset.train) == 20 and len(dataset.test) == 4
    assert dataset.num_classes == 10 and dataset.image_shape == (3, 32, 32)
    assert dataset.mean == (0.4914, 0.4822, 0.4465)
    assert dataset.std == (0.2471, 0.2435, 0.2616)
    # channel 0 of an image is the first 1024 bytes of its row, row-major
    row = fake_cifar10.train_images.reshape(-1, 3072)[0]
    assert dataset.train.images[0, 0, 1, 0] == row[32]
    assert dataset.train.images[0, 2, 31, 31] == row[3071]


def test_cifar100_uses_fine_labels(fake_cifar100, tmp_path: Path) -> None:
    dataset = load_dataset("cifar100", data_dir=tmp_path / "data", download=False)
    _check_roundtrip(dataset, fake_cifar100)
    assert dataset.num_classes == 100
    assert dataset.mean == (0.5071, 0.4865, 0.4409)
    assert dataset.std == (0.2673, 0.2564, 0.2762)


def test_second_load_reads_the_cache_without_decoding(
    fake_cifar10, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    first = load_dataset("cifar10", data_dir=root, download=False)
    assert cache_path(root, "cifar10").is_file()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again although a cache exists")

    monkeypatch.setattr(cifar_module, "decode_folder", refuse)
    fake_cifar10.archive.unlink()  # not even the source is needed any more
    second = load_dataset("cifar10", data_dir=root, download=False)
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels)
    assert second.class_names == first.class_names


def test_extracted_folder_alone_is_accepted(fake_cifar10, tmp_path: Path) -> None:
    root = tmp_path / "data"
    load_dataset("cifar10", data_dir=root, download=False)  # extracts next to the archive
    cache_path(root, "cifar10").unlink()
    fake_cifar10.archive.unlink()
    dataset = load_dataset("cifar10", data_dir=root, download=False)
    _check_roundtrip(dataset, fake_cifar10)


def test_damaged_extracted_folder_is_extracted_again(fake_cifar10, tmp_path: Path) -> None:
    root = tmp_path / "data"
    folder = root / SOURCES["cifar10"].folder
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(b"half a file")  # e.g. an interrupted extraction
    dataset = load_dataset("cifar10", data_dir=root, download=False)
    _check_roundtrip(dataset, fake_cifar10)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # staging removed


def test_missing_archive_without_download_names_path_and_url(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    with pytest.raises(UsageError) as caught:
        load_dataset("cifar10", data_dir=root, download=False)
    message = str(caught.value)
    assert str(root / "cifar-10-python.tar.gz") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "download=False" in message
    assert not cache_path(root, "cifar10").exists()


def test_offline_environment_blocks_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NCROBUST_OFFLINE", "1")
    with pytest.raises(UsageError, match="NCROBUST_OFFLINE"):
        load_dataset("cifar100", data_dir=tmp_path, download=True)


def test_corrupt_archive_is_reported(fake_cifar10, tmp_path: Path) -> None:
    archive = fake_cifar10.archive
    archive.write_bytes(archive.read_bytes()[:-100])  # truncated download
    with pytest.raises(UsageError) as caught:
        load_dataset("cifar10", data_dir=tmp_path / "data", download=False)
    message = str(caught.value)
    assert "corrupt" in message and str(archive) in message
    assert SOURCES["cifar10"].url in message


def test_real_checksums_are_torchvision_ones() -> None:
    from torchvision.datasets import CIFAR10, CIFAR100

    for name, cls in (("cifar10", CIFAR10), ("cifar100", CIFAR100)):
        source = SOURCES[name]
        assert (source.url, source.filename, source.md5, source.folder) == (
            cls.url,
            cls.filename,
            cls.tgz_md5,
            cls.base_folder,
        )
        listed = dict(cls.train_list + cls.test_list)
        listed[cls.meta["filename"]] = cls.meta["md5"]
        assert source.file_md5 == listed


def test_download_fetches_verifies_and_places_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cifar_builder, register_source, http_root
) -> None:
    remote, base_url = http_root
    fake = cifar_builder("cifar10", remote, np.random.default_rng(3))
    url = f"{base_url}/{fake.archive.name}"
    register_source("cifar10", fake.archive, url=url, file_md5=fake.file_md5)
    monkeypatch.delenv("NCROBUST_OFFLINE", raising=False)
    root = tmp_path / "fresh"
    dataset = load_dataset("cifar10", data_dir=root, download=True)
    _check_roundtrip(dataset, fake)
    assert (root / fake.archive.name).read_bytes() == fake.archive.read_bytes()
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no partial files


def test_download_with_wrong_checksum_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cifar_builder, register_source, http_root
) -> None:
    remote, base_url = http_root
    fake = cifar_builder("cifar10", remote, np.random.default_rng(3))
    register_source("cifar10", fake.archive, url=f"{base_url}/{fake.archive.name}")
    fake.archive.write_bytes(fake.archive.read_bytes()[:-10])  # server now sends a damaged file
    monkeypatch.delenv("NCROBUST_OFFLINE", raising=False)
    root = tmp_path / "fresh"
    with pytest.raises(UsageError, match="could not download CIFAR-10") as caught:
        load_dataset("cifar10", data_dir=root, download=True)
    assert str(root) in str(caught.value)
    assert list(root.iterdir()) == []  # neither the archive nor a partial file stays


def test_unreachable_url_gives_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cifar_builder, register_source, http_root
) -> None:
    _, base_url = http_root
    fake = cifar_builder("cifar100", tmp_path / "elsewhere", np.random.default_rng(4))
    register_source("cifar100", fake.archive, url=f"{base_url}/missing.tar.gz")
    monkeypatch.delenv("NCROBUST_OFFLINE", raising=False)
    with pytest.raises(UsageError) as caught:
        load_dataset("cifar100", data_dir=tmp_path / "fresh", download=True)
    message = str(caught.value)
    assert "missing.tar.gz" in message and str(tmp_path / "fresh") in message


def test_corrupt_archive_is_downloaded_again_when_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cifar_builder, register_source, http_root
) -> None:
    remote, base_url = http_root
    fake = cifar_builder("cifar100", remote, np.random.default_rng(5))
    register_source(
        "cifar100", fake.archive, url=f"{base_url}/{fake.archive.name}", file_md5=fake.file_md5
    )
    monkeypatch.delenv("NCROBUST_OFFLINE", raising=False)
    root = tmp_path / "data"
    root.mkdir()
    (root / fake.archive.name).write_bytes(fake.archive.read_bytes()[:500])  # interrupted
    dataset = load_dataset("cifar100", data_dir=root, download=True)
    _check_roundtrip(dataset, fake)
    assert (root / fake.archive.name).read_bytes() == fake.archive.read_bytes()
