"""load_dataset names and options, and where the data directory is."""

from __future__ import annotations

from pathlib import Path

import pytest

from ncrobust.data import DATASETS, default_data_dir, load_dataset
from ncrobust.errors import UsageError


def test_known_names() -> None:
    assert DATASETS == ("cifar10", "cifar100", "imagenette", "digits", "synthetic")


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as caught:
        load_dataset("mnist")
    assert "'mnist'" in str(caught.value)
    for name in DATASETS:
        assert name in str(caught.value)


def test_options_are_refused_where_none_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="takes no options"):
        load_dataset("digits", seed=1)
    with pytest.raises(UsageError, match="takes no options"):
        load_dataset("cifar10", data_dir=tmp_path, download=False, n_per_class=3)
    assert not any(tmp_path.iterdir())  # refused before touching the directory


def test_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NCROBUST_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "ncrobust" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "ncrobust" / "data"
    monkeypatch.setenv("NCROBUST_DATA", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"


def test_data_dir_argument_beats_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NCROBUST_DATA", str(tmp_path / "env"))
    with pytest.raises(UsageError) as caught:
        load_dataset("cifar10", data_dir=tmp_path / "arg", download=False)
    assert str(tmp_path / "arg") in str(caught.value) and "env" not in str(caught.value)
    with pytest.raises(UsageError) as caught:
        load_dataset("cifar10", download=False)
    assert str(tmp_path / "env" / "cifar-10-python.tar.gz") in str(caught.value)
