"""The decoded-data cache: atomic writes, and nothing unreadable or stale is ever used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ncrobust.data import Split, load_dataset
from ncrobust.data import cifar as cifar_module
from ncrobust.data.cache import CacheError, Decoded, cache_path, cached, read_cache, write_cache


def _decoded(seed: int) -> Decoded:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    return Decoded(Split(images, labels), Split(images[:2], labels[:2]), ("a", "b", "c"))


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "c" / "x.safetensors"
    original = _decoded(0)
    write_cache(path, original)
    back = read_cache(path, (3, 4, 4))
    assert torch.equal(back.train.images, original.train.images)
    assert torch.equal(back.test.labels, original.test.labels)
    assert back.class_names == ("a", "b", "c")
    assert os.listdir(path.parent) == ["x.safetensors"]  # no temporary left behind
    with pytest.raises(CacheError, match="not"):
        read_cache(path, (3, 8, 8))  # shape other than expected


def test_cache_file_is_readable_by_others_like_any_file(tmp_path: Path) -> None:
    from ncrobust.atomic import UMASK

    path = tmp_path / "cache.safetensors"
    write_cache(path, _decoded(0))
    assert path.stat().st_mode & 0o777 == 0o666 & ~UMASK  # not mkstemp's 0600


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.safetensors"
    write_cache(path, _decoded(0))

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_cache(path, _decoded(1))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["x.safetensors"]  # the temporary was removed
    assert torch.equal(read_cache(path).train.images, _decoded(0).train.images)  # old one intact


def test_truncated_cache_is_rebuilt_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    write_cache(path, _decoded(0))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CacheError):
        read_cache(path)
    builds: list[int] = []

    def build() -> Decoded:
        builds.append(1)
        return _decoded(1)

    with pytest.warns(UserWarning, match="rebuilding"):
        result = cached(path, build)
    assert builds == [1]
    assert torch.equal(result.train.images, _decoded(1).train.images)
    assert torch.equal(read_cache(path).train.images, _decoded(1).train.images)  # rewritten


def test_cache_of_other_format_or_junk_is_not_used(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    tensors = {"train_images": torch.zeros(1, 1, 1, 1, dtype=torch.uint8)}
    save_file(tensors, str(path), metadata={"format": "something-else"})
    with pytest.raises(CacheError, match="format"):
        read_cache(path)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(CacheError):
        read_cache(path)


def test_labels_out_of_range_are_rejected(tmp_path: Path) -> None:
    decoded = _decoded(0)
    bad = Decoded(decoded.train, decoded.test, ("a", "b"))  # label 2 has no class
    path = tmp_path / "x.safetensors"
    write_cache(path, bad)
    with pytest.raises(CacheError, match="labels"):
        read_cache(path)


def test_leftover_temp_and_truncated_cache_are_ignored_by_loader(
    fake_cifar10, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    reference = load_dataset("cifar10", data_dir=root, download=False)
    path = cache_path(root, "cifar10")
    full = path.read_bytes()
    # a crash mid-write leaves a temporary next to the cache; the cache itself is truncated
    (path.parent / f".{path.name}.abc123.tmp").write_bytes(full[: len(full) // 2])
    path.write_bytes(full[: len(full) // 3])
    decodes: list[Path] = []
    original = cifar_module.decode_folder

    def counting(folder: Path, layout: cifar_module.CifarLayout) -> Decoded:
        decodes.append(folder)
        return original(folder, layout)

    monkeypatch.setattr(cifar_module, "decode_folder", counting)
    with pytest.warns(UserWarning, match="unusable cache"):
        again = load_dataset("cifar10", data_dir=root, download=False)
    assert len(decodes) == 1  # rebuilt from the source, not read from the broken file
    assert torch.equal(again.train.images, reference.train.images)
    rewritten = read_cache(path, (3, 32, 32))  # the rewritten cache is complete again
    assert torch.equal(rewritten.test.images, reference.test.images)


def test_unwritable_cache_directory_still_loads(
    fake_cifar10, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr("ncrobust.data.cache.write_cache", refuse)
    with pytest.warns(UserWarning, match="could not write cache"):
        dataset = load_dataset("cifar10", data_dir=tmp_path / "data", download=False)
    assert len(dataset.train) == 20
