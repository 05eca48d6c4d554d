"""Run directories under faults: kills at chosen writes, SIGTERM, a full disk, damaged files.

Kill points are deterministic: ``NCROBUST_FAULT=ACTION@K`` makes the K-th file write of the
process misbehave. For the run below the writes are: 1 the manifest, 2 config.yaml, 3 log.txt,
4 metrics (epoch 0), 5 last checkpoint (epoch 0), 6 epoch-0000, 7 metrics (epoch 1), 8 last,
9 epoch-0001, 10 log, 11 metrics (epoch 2), 12 last, 13 epoch-0002, 14 log, 15 DONE.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from ncrobust import atomic
from ncrobust.cli import main
from ncrobust.runs.checkpoint import LAST, load_checkpoint
from ncrobust.runs.directory import MANIFEST_NAME as MANIFEST
from ncrobust.runs.directory import RunDirectory, is_temporary

ARGS = [
    "--dataset", "digits", "--model", "small_cnn", "--mode", "st", "--steps", "1",
    "--eps", "0.15", "--alpha", "0.1", "--epochs", "2", "--measure-every", "1",
    "--checkpoint-every", "1", "--views", "clean", "--device", "cpu", "--quiet",
]  # fmt: skip
TIMINGS = {"seconds", "measure_seconds"}


def _cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop(atomic.FAULT_ENV, None)
    if fault:
        env[atomic.FAULT_ENV] = fault
    return subprocess.run(
        [sys.executable, "-m", "ncrobust.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def _arm(monkeypatch: pytest.MonkeyPatch, action: str, nth: int) -> None:
    """Fault at this process's ``nth`` write from now (in-process runs share the counter)."""
    monkeypatch.setenv(atomic.FAULT_ENV, f"{action}@{atomic.write_count() + nth}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> RunDirectory:
    """An uninterrupted run, started where a kill during config.yaml left only a temporary."""
    out = tmp_path_factory.mktemp("reference") / "run"
    killed = _cli("train", *ARGS, "--out", str(out), fault="kill@2")
    assert killed.returncode == -9
    left = sorted(p.name for p in out.iterdir())
    assert len(left) == 3 and is_temporary(left[0]) and left[1:] == [".lock", MANIFEST], left
    assert not (out / "config.yaml").exists()
    refused = _cli("train", "--resume", str(out))
    assert refused.returncode == 2 and "holds no run" in refused.stderr
    assert main(["train", *ARGS, "--out", str(out)]) == 0  # not a run: used as it is
    run = RunDirectory(out)
    assert run.is_complete() and not [p for p in out.iterdir() if is_temporary(p.name)]
    return run


def _same_as(reference: RunDirectory, run: RunDirectory) -> None:
    def table(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame[~frame.metric.isin(TIMINGS)]
        keys = ["epoch", "split", "view", "layer", "metric"]
        return frame.sort_values(keys).reset_index(drop=True)

    assert run.is_complete()
    pd.testing.assert_frame_equal(table(reference.read_metrics()), table(run.read_metrics()))
    names = sorted(p.name for p in reference.checkpoint_dir.iterdir())
    assert names == sorted(p.name for p in run.checkpoint_dir.iterdir())
    for name in names:
        a = load_file(str(reference.checkpoint_dir / name))
        b = load_file(str(run.checkpoint_dir / name))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), name
    assert not [p for p in run.root.rglob("*") if is_temporary(p.name)]


def test_killed_before_the_first_checkpoint_resumes_from_scratch(
    tmp_path: Path, reference: RunDirectory
) -> None:
    out = tmp_path / "run"
    assert _cli("train", *ARGS, "--out", str(out), fault="kill@4").returncode == -9
    run = RunDirectory(out)
    assert run.config_path.is_file() and not (run.checkpoint_dir / LAST).exists()
    assert [p.name for p in out.iterdir() if is_temporary(p.name)]  # the cut metrics write
    plain = _cli("train", *ARGS, "--out", str(out))
    assert plain.returncode == 2 and "--resume" in plain.stderr
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert "starting again from epoch 0" in run.log_path.read_text()
    _same_as(reference, run)


def test_killed_while_keeping_a_checkpoint_resumes_identically(
    tmp_path: Path, reference: RunDirectory
) -> None:
    out = tmp_path / "run"
    assert _cli("train", *ARGS, "--out", str(out), fault="kill@9").returncode == -9
    run = RunDirectory(out)
    assert load_checkpoint(run.checkpoint_dir / LAST).epoch == 1
    assert not (run.checkpoint_dir / "epoch-0001.safetensors").exists()  # never a partial file
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    _same_as(reference, run)


def test_sigterm_is_a_clean_stop_and_the_run_resumes(
    tmp_path: Path,
    reference: RunDirectory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference.root, out)
    run = RunDirectory(out)
    (out / "DONE").unlink()
    run.truncate_after(1)
    shutil.copyfile(run.checkpoint_dir / "epoch-0001.safetensors", run.checkpoint_dir / LAST)
    (run.checkpoint_dir / "epoch-0002.safetensors").unlink()
    capsys.readouterr()
    _arm(monkeypatch, "term", 3)  # resume writes: 1 log, 2 metrics (epoch 2), 3 last checkpoint
    assert main(["train", "--resume", str(out), "--quiet"]) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "terminated (SIGTERM)" in err[0] and "--resume" in err[0], err
    assert "interrupted: SIGTERM after epoch 1" in run.log_path.read_text()
    assert not [p for p in out.rglob("*") if is_temporary(p.name)]
    assert load_checkpoint(run.checkpoint_dir / LAST).epoch == 1
    monkeypatch.delenv(atomic.FAULT_ENV)
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    _same_as(reference, run)


def test_disk_full_stops_with_one_message_and_keeps_everything(
    tmp_path: Path,
    reference: RunDirectory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    capsys.readouterr()
    _arm(monkeypatch, "enospc", 11)  # the metrics write of epoch 2
    assert main(["train", *ARGS, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    metrics = out / "metrics.parquet"
    assert len(err) == 1 and f"no space left writing {metrics} (needs" in err[0], err
    assert "available" in err[0] and "tables up to epoch 1" in err[0]
    run = RunDirectory(out)
    assert "stopped: no space left writing" in run.log_path.read_text()
    assert run.read_metrics().epoch.max() == 1
    assert load_checkpoint(run.checkpoint_dir / LAST).epoch == 1
    monkeypatch.delenv(atomic.FAULT_ENV)
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    _same_as(reference, run)


def _copy(reference: RunDirectory, tmp_path: Path) -> RunDirectory:
    out = tmp_path / "copy"
    shutil.copytree(reference.root, out)
    return RunDirectory(out)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: _flip(r.checkpoint_dir / LAST), r"last\.safetensors is corrupt"),
        (lambda r: _flip(r.checkpoint_dir / "epoch-0001.safetensors"), r"0001\.safetensors is c"),
        (lambda r: r.metrics_path.unlink(), r"metrics\.parquet is missing"),
        (
            lambda r: (
                pd.read_parquet(r.metrics_path)
                .rename(columns={"value": "v"})
                .to_parquet(r.metrics_path)
            ),
            "has columns",
        ),
        (
            lambda r: r.config_path.write_text(r.config_path.read_text()[:-40]),
            "does not match its checksum",
        ),
        (lambda r: r.config_path.write_bytes(b"\xff\xfe"), r"config\.yaml is not UTF-8"),
        (lambda r: r.config_path.write_text(""), r"config\.yaml is empty"),
    ],
)
def test_damaged_run_is_refused_with_the_file_named(
    tmp_path: Path,
    reference: RunDirectory,
    capsys: pytest.CaptureFixture[str],
    damage,  # type: ignore[no-untyped-def]
    message: str,
) -> None:
    run = _copy(reference, tmp_path)
    damage(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run.root), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "last good" not in err
    assert re.search(message, err), err


def test_checkpoint_of_another_run_or_epoch_is_refused(
    tmp_path: Path, reference: RunDirectory, capsys: pytest.CaptureFixture[str]
) -> None:
    from ncrobust.models import create_model
    from ncrobust.runs.checkpoint import save_checkpoint

    run = _copy(reference, tmp_path)
    other = create_model("small_cnn", num_classes=3, in_channels=1, image_size=8)
    save_checkpoint(
        run.checkpoint_dir / LAST,
        other,
        None,
        1,
        identity={"model": "small_cnn", "dataset": "synthetic", "num_classes": 3},
    )
    capsys.readouterr()
    assert main(["train", "--resume", str(run.root), "--quiet"]) == 2
    assert "belongs to another run: dataset synthetic (this run: digits)" in capsys.readouterr().err
    model = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    save_checkpoint(run.checkpoint_dir / LAST, model, None, 99)
    assert main(["train", "--resume", str(run.root), "--quiet"]) == 2
    assert "claims epoch 99, outside this run's [0, 2]" in capsys.readouterr().err


def test_a_locked_run_refuses_a_second_writer(
    tmp_path: Path, reference: RunDirectory, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(reference, tmp_path)
    hold = (
        "import sys; from ncrobust.runs.lock import RunLock; "
        "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", hold, str(run.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        before = run.metrics_path.read_bytes()
        capsys.readouterr()
        assert main(["train", "--resume", str(run.root), "--quiet"]) == 2
        assert f"being written by pid {proc.pid}" in capsys.readouterr().err
        assert main(["measure", str(run.root), "--layers", "penultimate"]) == 2
        assert f"pid {proc.pid}" in capsys.readouterr().err
        assert run.metrics_path.read_bytes() == before
    finally:
        proc.communicate("")


def test_overwrite_replaces_only_what_ncrobust_wrote(
    tmp_path: Path, reference: RunDirectory, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "important.txt").write_text("keep me")
    assert main(["train", *ARGS, "--out", str(foreign), "--overwrite"]) == 2
    assert "holds no ncrobust config.yaml" in capsys.readouterr().err
    assert (foreign / "important.txt").read_text() == "keep me"
    run = _copy(reference, tmp_path)
    (run.root / "notes.md").write_text("mine")
    target = tmp_path / "link"
    target.symlink_to(run.root)
    assert main(["train", *ARGS, "--epochs", "1", "--out", str(target), "--overwrite"]) == 0
    assert target.is_symlink() and (run.root / "notes.md").read_text() == "mine"
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == [
        "epoch-0000.safetensors",
        "epoch-0001.safetensors",
        "last.safetensors",
    ]
    assert run.read_metrics().epoch.max() == 1 and run.done_path.read_text() == "1\n"


def test_missing_last_checkpoint_resumes_from_the_newest_kept_one(
    tmp_path: Path, reference: RunDirectory, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(reference, tmp_path)
    run.done_path.unlink()
    run.truncate_after(1)  # the tables reach epoch 1: epoch-0002 (kept later) cannot be used
    (run.checkpoint_dir / LAST).unlink()
    assert main(["train", "--resume", str(run.root), "--quiet"]) == 0
    log = run.log_path.read_text()
    assert "resuming from the kept checkpoint epoch-0001.safetensors" in log
    assert "starting again from epoch 0" not in log
    _same_as(reference, run)
    for name in ("epoch-0001.safetensors", "epoch-0000.safetensors"):
        _flip(run.checkpoint_dir / name)
    run.done_path.unlink()
    run.truncate_after(1)
    (run.checkpoint_dir / LAST).unlink()
    (run.checkpoint_dir / "epoch-0002.safetensors").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(run.root), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "last.safetensors is missing and none of the kept checkpoints" in err
    assert "epoch-0001.safetensors, epoch-0000.safetensors" in err


def test_a_checkpoint_of_another_run_with_the_same_model_is_refused(
    tmp_path: Path, reference: RunDirectory, capsys: pytest.CaptureFixture[str]
) -> None:
    from ncrobust.models import create_model
    from ncrobust.runs.checkpoint import restore, save_checkpoint

    run = _copy(reference, tmp_path)
    run.done_path.unlink()
    mine = load_checkpoint(run.checkpoint_dir / LAST)
    model = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    restore(mine, model)
    stranger = {**mine.identity, "run_id": "0123456789abcdef"}  # same model and data set
    save_checkpoint(run.checkpoint_dir / LAST, model, None, 2, mine.metadata, stranger)
    capsys.readouterr()
    assert main(["train", "--resume", str(run.root), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"run id 0123456789abcdef (this run: {run.run_id()})" in err, err
    assert not run.is_complete()


STATS_ARGS = [*ARGS[: ARGS.index("--views")], "--views", "clean,pgd", "--mode", "at"]


@pytest.mark.parametrize("damage", ["deleted", "older copy"])
def test_lost_attack_stats_rows_are_refused(
    tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["train", *STATS_ARGS, "--epochs", "1", "--out", str(out)]) == 0
    run = RunDirectory(out)
    stats = run.read_stats()
    assert set(stats.epoch) == {0, 1}
    run.done_path.unlink()
    if damage == "deleted":
        run.stats_path.unlink()
        expected = r"attack_stats\.parquet is missing"
    else:
        stats[stats.epoch == 0].to_parquet(run.stats_path)
        expected = r"attack_stats\.parquet holds \d+ rows up to epoch 1, the checkpoint recorded"
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--quiet"]) == 2
    assert re.search(expected, capsys.readouterr().err)
    assert not run.is_complete()
