"""End-to-end training on digits: the promised table, resume, refusals, divergence."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from ncrobust.cli import main
from ncrobust.config import build_config
from ncrobust.runs.checkpoint import LAST, load_checkpoint
from ncrobust.runs.directory import RunDirectory
from ncrobust.training import train
from ncrobust.views import ADAPTIVE_VIEW, VIEWS

FAST = [
    "--dataset", "digits", "--model", "small_cnn", "--steps", "2", "--eps", "0.15",
    "--alpha", "0.05", "--lr", "0.05", "--measure-batch-size", "2048", "--device", "cpu",
    "--checkpoint-every", "2",
]  # fmt: skip
NC_METRICS = {
    "nc1", "nc2_equinorm", "nc2_equiangular", "nc4", "nc2_equinorm_w", "nc2_equiangular_w",
    "nc3", "nc3_frobenius",
}  # fmt: skip
REFERENCE_METRICS = {"ncc_match", "ncc_accuracy", "simplex_similarity", "angular_distance"}
TIMINGS = {"seconds", "measure_seconds"}


def _train(out: Path, *extra: str) -> int:
    return main(["train", *FAST, "--out", str(out), "--quiet", *extra])


@pytest.mark.parametrize("mode", ["st", "at", "trades"])
def test_short_run_writes_every_promised_value(tmp_path: Path, mode: str) -> None:
    out = tmp_path / mode
    assert (
        _train(out, "--mode", mode, "--epochs", "3", "--measure-every", "2", "--views", "all") == 0
    )
    run = RunDirectory(out)
    assert run.is_complete() and run.config_path.is_file() and run.log_path.is_file()
    table = run.read_metrics()
    fit = table[table.view == "fit"]
    assert sorted(fit.epoch.unique()) == [1, 2, 3]
    expected_fit = {"loss", "accuracy", "lr", "seconds"} | (
        {"ce_loss", "kl_loss"} if mode == "trades" else set()
    )
    assert expected_fit <= set(fit.metric)
    probes = table[table.view != "fit"]
    assert sorted(probes.epoch.unique()) == [0, 2, 3]  # epoch 0, every 2nd and the last
    for epoch in (0, 2, 3):
        rows = probes[probes.epoch == epoch]
        for split in ("train", "test"):
            for view in (v for v in VIEWS if v != ADAPTIVE_VIEW):  # `all`: every view but it
                if view == "train_adv" and (split == "test" or epoch == 0):
                    continue  # the perturbations of training: train split, trained epochs
                here = rows[(rows.split == split) & (rows.view == view)]
                out_metrics = set(here[here.layer == "output"].metric)
                assert {"accuracy", "loss"} <= out_metrics, (epoch, split, view)
                if view in ("pgd", "gaussian", "targeted"):  # KL to the same split's clean view
                    assert "kl" in out_metrics, (epoch, split, view)
                nc = set(here[here.layer == "penultimate"].metric)
                assert nc >= NC_METRICS, (epoch, split, view, NC_METRICS - nc)
                if (split, view) != ("train", "clean"):
                    assert nc >= REFERENCE_METRICS, (epoch, split, view)
        assert not rows[(rows.split == "test") & (rows.view == "train_adv")].size
    assert table.value[~table.metric.isin(TIMINGS)].notna().all()
    stats = run.read_stats()
    assert set(stats.view) == {"pgd", "train_adv", "gaussian", "targeted"}
    assert set(stats.statistic) >= {"predicted_count", "clean_mean_norm", "angle"}
    counts = stats[(stats.statistic == "predicted_count") & (stats.epoch == 3)]
    per_view = counts.groupby(["split", "view"]).value.sum()
    assert per_view[("train", "pgd")] == 1437 and per_view[("test", "pgd")] == 360
    checkpoints = sorted(p.name for p in run.checkpoint_dir.iterdir())
    assert checkpoints == ["epoch-0000.safetensors", "epoch-0002.safetensors",
                           "epoch-0003.safetensors", "last.safetensors"]  # fmt: skip


def _comparable(table: pd.DataFrame) -> pd.DataFrame:
    table = table[~table.metric.isin(TIMINGS)]
    return table.sort_values(["epoch", "split", "view", "layer", "metric"]).reset_index(drop=True)


@pytest.mark.parametrize("mode", ["at", "trades"])
def test_resume_reproduces_the_uninterrupted_table(tmp_path: Path, mode: str) -> None:
    args = ["--mode", mode, "--epochs", "4", "--measure-every", "2", "--views", "all"]
    assert _train(tmp_path / "whole", *args) == 0
    config = build_config(
        overrides={
            "dataset": "digits", "model": "small_cnn", "steps": 2, "eps": 0.15, "alpha": 0.05,
            "lr": 0.05, "measure_batch_size": 2048, "device": "cpu", "checkpoint_every": 2,
            "mode": mode, "epochs": 4, "measure_every": 2, "views": "all",
            "out": str(tmp_path / "cut"),
        }
    )  # fmt: skip
    run = train(config, progress=False, stop_after=3)
    assert not run.is_complete()
    # a kill after epoch 4's rows were appended but before its checkpoint: rows to be dropped
    stale = run.read_metrics().query("epoch == 3").assign(epoch=4)
    run.append(stale.to_dict("records"))
    assert main(["train", "--resume", str(run.root), "--quiet"]) == 0
    whole = _comparable(RunDirectory(tmp_path / "whole").read_metrics())
    resumed = _comparable(run.read_metrics())
    assert not resumed.duplicated(["epoch", "split", "view", "layer", "metric"]).any()
    pd.testing.assert_frame_equal(whole, resumed)
    pd.testing.assert_frame_equal(
        RunDirectory(tmp_path / "whole").read_stats(), run.read_stats(), check_exact=True
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "mnist"], "unknown dataset"),
        (["--model", "resnet50"], "unknown model"),
        (["--mode", "free"], "unknown mode"),
        (["--norm", "l1"], "unknown norm"),
        (["--views", "clean,fgsm"], "unknown view"),
        (["--layers", "block9"], "unknown layer"),
        (["--eps", "-1"], "eps must be"),
        (["--eps", "8"], "8/255"),
        (["--batch-size", "0"], "batch_size must be >= 1"),
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--device", "cuda:7"], "cuda"),
        (["--config", "/no/such.yaml"], "does not exist"),
    ],
)
def test_bad_configuration_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "never"
    assert _train(out, *args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_existing_output_is_kept_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert _train(out, "--epochs", "1") == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep me"
    assert main(["train", "--resume", str(out)]) == 2  # not a run directory
    assert (out / "precious.txt").read_text() == "keep me"
    assert _train(out, "--epochs", "1", "--overwrite") == 2  # not a run: never deleted
    assert "holds no ncrobust config.yaml" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    inode = empty.stat().st_ino
    assert _train(empty, "--epochs", "1") == 0  # an empty --out is used as it is
    assert empty.stat().st_ino == inode and RunDirectory(empty).is_complete()
    assert main(["train", "--resume", str(empty), "--epochs", "5"]) == 2
    assert "cannot change it" in capsys.readouterr().err


def test_non_finite_loss_stops_and_keeps_the_last_good_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "boom"
    assert _train(out, "--epochs", "3", "--lr", "1e30", "--measure-every", "1") == 1
    err = capsys.readouterr().err
    assert "non-finite training loss in epoch" in err
    run = RunDirectory(out)
    table = run.read_metrics()
    last = load_checkpoint(run.checkpoint_dir / LAST)
    bad_epoch = int(err.split("in epoch ")[1].split()[0])
    assert last.epoch == bad_epoch - 1
    assert table.epoch.max() == bad_epoch - 1 and not run.is_complete()
    kept = table[(table.view != "fit") & ~table.metric.isin(TIMINGS)]
    assert kept[kept.epoch == 0].value.notna().all()
    assert all(torch.isfinite(t).all() for t in last.model_state.values())
    assert f"stopped: non-finite training loss in epoch {bad_epoch}" in run.log_path.read_text()


def test_progress_bars_and_tensorboard_scalars(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tb"
    assert _train(out, "--epochs", "1", "--tensorboard") == 0
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "train/clean/penultimate/nc1" in tags and "test/pgd/output/accuracy" in tags
    (text,) = events.Tensors("config/text_summary")  # the config, as a table in the text tab
    assert "| mode | st |" in text.tensor_proto.string_val[0].decode()
    logged = {s.step: s.value for s in events.Scalars("train/clean/penultimate/nc1")}
    table = RunDirectory(out).read_metrics()
    expected = table.query("split == 'train' and view == 'clean' and metric == 'nc1'")
    assert sorted(logged) == [0, 1]  # epoch 0 (initialisation) and epoch 1
    for row in expected.itertuples():
        assert logged[row.epoch] == pytest.approx(row.value, rel=1e-6)
    capsys.readouterr()
    assert (
        main(["train", *FAST, "--out", str(tmp_path / "bars"), "--epochs", "1", "--progress"]) == 0
    )
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.err and "measure epoch 1" in captured.err  # tqdm's bars
    assert "[bars] epoch 1/1 | loss" in captured.out  # the summary line stays above them


def test_one_line_per_epoch_and_quiet_prints_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", *FAST, "--epochs", "2", "--measure-every", "1", "--views", "clean"]
    assert main([*argv, "--out", str(tmp_path / "lines"), "--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split(" | ")[0] for line in out[:-1]] == ["[lines] epoch 1/2", "[lines] epoch 2/2"]
    assert "nc1" in out[1] and out[-1] == f"run directory: {tmp_path / 'lines'}"
    assert main([*argv, "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines() == [f"run directory: {tmp_path / 'quiet'}"]
    assert captured.err == ""
    assert "epoch 2/2 | loss" in (tmp_path / "quiet" / "log.txt").read_text()


def test_kl_to_clean_without_a_clean_view(tmp_path: Path) -> None:
    """Clean is measured first per split even when only its accuracy is recorded."""
    out = tmp_path / "pgd-only"
    assert _train(out, "--epochs", "1", "--views", "pgd,gaussian") == 0
    table = RunDirectory(out).read_metrics()
    rows = table[(table.epoch == 1) & (table.layer == "output") & (table.metric == "kl")]
    assert set(zip(rows.split, rows.view, strict=True)) == {
        ("train", "pgd"),
        ("train", "gaussian"),
        ("test", "pgd"),
        ("test", "gaussian"),
    }
    assert (rows.value >= 0).all()
