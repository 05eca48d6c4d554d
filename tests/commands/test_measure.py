"""``ncrobust measure`` refuses bad options, damaged runs and foreign checkpoints up front."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ncrobust.cli import main
from ncrobust.config import build_config, write_config
from ncrobust.models import create_model
from ncrobust.runs.checkpoint import LAST, epoch_name, save_checkpoint
from ncrobust.runs.directory import RunDirectory

IDENTITY = {
    "model": "small_cnn",
    "dataset": "digits",
    "num_classes": 10,
    "in_channels": 1,
    "image_size": 8,
}


def _run(tmp_path: Path, epoch: int = 2, identity: dict[str, object] = IDENTITY) -> RunDirectory:
    """A run directory written without training: its config and one checkpoint."""
    run = RunDirectory(tmp_path / "run")
    config = build_config("digits", overrides={"out": str(run.root), "epochs": 2})
    write_config(config, run.config_path)
    model = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    for name in (LAST, epoch_name(epoch)):
        save_checkpoint(run.checkpoint_dir / name, model, None, epoch, identity=identity)
    return run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--splits", "bogus"], "--splits: expected train and/or test"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--eps", "8"], "--eps 8/255"),
        (["--eps", "0"], "--eps values must be > 0"),
        (["--device", "meta"], "unknown device 'meta'"),
        (["--views", "clean,fgsm"], "unknown view 'fgsm'"),
    ],
)
def test_bad_options_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    run = _run(tmp_path)
    assert main(["measure", str(run.root), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not run.measurements_path.exists()


def test_truncated_config_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(tmp_path)
    text = run.config_path.read_text()
    run.config_path.write_text(text[: text.index("gaussian_std: ") + len("gaussian_std: 0.0")])
    assert main(["measure", str(run.root)]) == 2
    assert "does not match its checksum" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("epoch", "identity", "message"),
    [
        (99, IDENTITY, r"claims epoch 99, outside this run's [0, 2]"),
        (1, {**IDENTITY, "dataset": "cifar10"}, "belongs to another run: dataset cifar10"),
    ],
)
def test_foreign_or_impossible_checkpoints_are_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    epoch: int,
    identity: dict[str, object],
    message: str,
) -> None:
    run = _run(tmp_path, epoch, identity)
    assert main(["measure", str(run.root), "--epochs", "all"]) == 2
    assert message in capsys.readouterr().err
    assert not run.measurements_path.exists()


def test_default_views_are_the_runs_own_with_their_radii(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    views = ["clean", "train_adv", "targeted@eps=0.3"]
    config = build_config(
        "digits",
        overrides={"out": str(run.root), "epochs": 2, "eps": 0.15, "alpha": 0.05, "steps": 2,
                   "views": views, "splits": ["test"]},
    )  # fmt: skip
    write_config(config, run.config_path)
    model = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    save_checkpoint(run.checkpoint_dir / LAST, model, None, 2, identity=IDENTITY)
    assert main(["measure", str(run.root), "--layers", "penultimate", "--device", "cpu"]) == 0
    measured = pd.read_parquet(run.root / "measurements.parquet")
    # targeted at the run's own 0.3, not the training eps; train_adv exists only in training
    assert set(measured.view) == {"clean", "targeted@eps=0.3"}
    assert set(measured.split) == {"test"}  # the run's own splits
