"""sweep: grid expansion, and skipping / resuming / starting runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest

from ncrobust.cli import main
from ncrobust.commands.sweep import grid_from_args
from ncrobust.config import TrainConfig
from ncrobust.errors import UsageError
from ncrobust.experiments.grids import (
    Grid,
    dry_run,
    estimate_parts,
    estimate_seconds,
    expand,
    measured_epochs,
    read_rates,
)
from ncrobust.experiments.sweep import run_sweep, status
from ncrobust.runs.directory import RunDirectory
from ncrobust.runs.lock import RunLock
from ncrobust.training import train


def _named(name: str, **flags: object) -> list[TrainConfig]:
    """The runs of a named grid as ``ncrobust sweep --grid NAME`` expands them."""
    args = argparse.Namespace(
        grid=name, datasets=None, models=None, modes=None, norms=None, eps=None, seeds=None,
        root="runs/sweep", set=[],
    )  # fmt: skip
    for key, value in flags.items():
        setattr(args, key, value)
    return expand(grid_from_args(args))


def test_paper_grid_is_the_runs_of_the_papers_figures() -> None:
    configs = _named("paper")
    assert len({c.out for c in configs}) == len(configs)
    assert all(c.epochs == 400 and c.seed in (1, 2, 3) for c in configs)
    assert all(c.final_layers == ["all"] for c in configs)  # Figures 11-14 need every layer
    settings = {(c.dataset, c.mode, c.norm) for c in configs}
    figures = {
        ("cifar10", "st", "linf"), ("cifar10", "at", "linf"), ("cifar10", "trades", "linf"),
        ("cifar100", "st", "linf"), ("cifar100", "at", "linf"), ("cifar100", "trades", "linf"),
        ("cifar10", "at", "l2"), ("cifar10", "trades", "l2"),
        ("cifar100", "at", "l2"), ("cifar100", "trades", "l2"),
    }  # fmt: skip
    imagenette = {(d, m, n) for d, m, n in figures if d == "cifar10"}
    assert settings == figures | {("imagenette", m, n) for _, m, n in imagenette}
    assert not any(c.mode == "st" and c.norm == "l2" for c in configs)  # no figure shows it
    trades = [c for c in configs if c.mode == "trades"]
    assert trades and all(c.trades_bn_eval and "_trades-bneval_" in c.out for c in trades)
    assert not any(c.trades_bn_eval for c in configs if c.mode != "trades")
    # per setting: both models, three seeds (and three training radii for Figure 15)
    cifar10_at = [c for c in configs if c.dataset == "cifar10" and c.mode == "at"]
    assert len([c for c in cifar10_at if c.norm == "linf"]) == 2 * 3 * 3
    assert len(configs) == 6 + 18 + 12 + 12 + 24 + 30
    l2 = [c for c in configs if c.norm == "l2"]
    assert {round(c.eps * 255, 6) for c in l2 if c.dataset != "imagenette"} == {128.0}
    assert {round(c.eps * 255, 6) for c in l2 if c.dataset == "imagenette"} == {1536.0}
    assert {c.steps for c in configs if c.dataset == "imagenette"} == {5}


def test_paper_small_eps_study_is_measured_during_training() -> None:
    study = _named("paper-eps")
    paper = {c.out: c for c in _named("paper")}
    assert all(paper[c.out] == c for c in study)  # the same runs as the paper grid's
    st = [c for c in study if c.mode == "st"]
    assert len(st) == 6 and all(c.dataset == "cifar10" and c.norm == "linf" for c in st)
    for c in st:  # Figure 16: attacked at 2, 4 (own views) and 8 /255 (the run's pgd)
        assert c.eps == pytest.approx(8 / 255)
        assert sorted(c.view_radii().values()) == pytest.approx([2 / 255, 4 / 255])
        assert ("train", "pgd@eps=0.00784314") in c.probe_plan()
        assert ("test", "pgd@eps=0.00784314") not in c.probe_plan()  # train data, as the paper
        assert {"pgd", "targeted", "gaussian"} <= {v for _, v in c.probe_plan()}
        assert c.measure_every == 5
    at = [c for c in study if c.mode == "at"]
    assert sorted({round(c.eps * 255, 6) for c in at}) == [2.0, 4.0, 8.0]
    for c in at:  # Figure 15: every training radius measured on 8/255-perturbed training data
        assert c.alpha / c.eps == 0.25  # the step scaled linearly: exactly 2/255 at 8/255
        assert c.view_radii() == {"pgd@eps=0.0313725": pytest.approx(8 / 255)}
        assert ("train", "train_adv") in c.probe_plan()


def test_paper_trades_bn_runs_both_ways_on_the_same_seeds() -> None:
    configs = _named("paper-trades-bn")
    frozen = [c for c in configs if c.trades_bn_eval]
    original = [c for c in configs if not c.trades_bn_eval]
    assert len(frozen) == len(original) == 6 and all(c.mode == "trades" for c in configs)
    key = lambda c: (c.dataset, c.model, c.norm, c.eps, c.seed)  # noqa: E731
    assert sorted(map(key, frozen)) == sorted(map(key, original))
    assert len({c.out for c in configs}) == 12
    assert all("_trades-bneval_" in c.out for c in frozen)
    assert all("_trades_linf_" in c.out for c in original)
    paper = {c.out: c for c in _named("paper")}
    assert all(paper[c.out] == c for c in frozen)  # as released: shared with the paper grid


def test_axes_on_the_command_line_narrow_every_sub_grid() -> None:
    configs = _named("paper", datasets="cifar100", seeds="1,4")
    assert {c.dataset for c in configs} == {"cifar100"} and {c.seed for c in configs} == {1, 4}
    assert len(configs) == 2 * 2 * (2 + 1 + 2)  # ST, AT l_inf; AT l_2; TRADES l_inf, l_2
    assert {c.mode for c in _named("paper", modes="st")} == {"st"}


def test_two_different_runs_under_one_name_are_refused() -> None:
    one = Grid(["digits"], ["small_cnn"], ["trades"], ["linf"], [1])
    other = Grid(
        ["digits"], ["small_cnn"], ["trades"], ["linf"], [1], overrides={"trades_bn_eval": True}
    )
    with pytest.raises(UsageError, match="differ in trades_bn_eval"):
        expand([one, other])
    tagged = Grid(**{**vars(other), "tag": "-bneval"})
    assert [c.trades_bn_eval for c in expand([one, tagged, one])] == [False, True]
    with pytest.raises(UsageError, match="grid tag"):
        expand(Grid(**{**vars(other), "tag": "/x"}))


def test_eps_axis_scales_the_step() -> None:
    configs = expand(Grid(["cifar10"], ["vgg11_bn"], ["at"], ["linf"], [1], eps=[2 / 255, 4 / 255]))
    assert [round(c.alpha * 255, 6) for c in configs] == [0.5, 1.0]  # 2/255 step at 8/255


def test_sweep_skips_done_resumes_interrupted_and_starts_new(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = Grid(
        ["digits"],
        ["small_cnn"],
        ["st"],
        ["linf"],
        [1, 2, 3],
        root=str(tmp_path),
        overrides={"epochs": 2, "steps": 1, "device": "cpu", "measure_every": 1},
    )
    done, interrupted, new = expand(grid)
    train(done, progress=False)
    train(interrupted, progress=False, stop_after=1)
    assert [status(c) for c in (done, interrupted, new)] == ["done", "interrupted", "new"]
    capsys.readouterr()
    assert main(["sweep", "status", str(tmp_path), "--json"]) == 0
    rows = {row["out"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {done.out, interrupted.out}  # found on disk: nothing planned yet
    assert (rows[done.out]["state"], rows[done.out]["epoch"], rows[done.out]["epochs"]) == (
        "done", 2, 2,
    )  # fmt: skip
    assert (rows[interrupted.out]["state"], rows[interrupted.out]["epoch"]) == ("interrupted", 1)
    outcome = run_sweep([done, interrupted, new], progress=False)
    assert list(outcome.values()) == ["skipped", "resumed", "trained"]
    assert all(status(c) == "done" for c in (done, interrupted, new))


def test_sweep_cli_lists_and_refuses_bad_grids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sweep", "--grid", "digits", "--root", str(tmp_path), "--list"]) == 0
    assert capsys.readouterr().out.count("new") == 9
    assert main(["sweep", "--grid", "digits", "--modes", "st,free", "--list"]) == 2
    assert "--modes free: not in grid 'digits'" in capsys.readouterr().err
    assert main(["sweep", "--datasets", "digits", "--models", "small_cnn", "--modes", "free",
                 "--norms", "linf", "--seeds", "1", "--list"]) == 2  # fmt: skip
    assert "unknown mode 'free'" in capsys.readouterr().err
    assert main(["sweep", "--datasets", "digits"]) == 2


def _tiny(root: Path) -> list[str]:
    return [
        "sweep", "--grid", "digits", "--modes", "st", "--seeds", "1", "--root", str(root),
        "--set", "steps=1", "--set", "views=clean", "--set", "device=cpu", "--quiet",
    ]  # fmt: skip


def test_sweep_refuses_a_changed_config_and_extends_only_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_tiny(tmp_path), "--set", "epochs=1"]) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    run = RunDirectory(run_dir)
    before = run.read_metrics()
    stamp = run.metrics_path.stat().st_mtime_ns
    capsys.readouterr()
    assert main([*_tiny(tmp_path), "--set", "epochs=2"]) == 2  # not silently "skipped"
    err = capsys.readouterr().err
    assert run_dir.name in err and "epochs 1 -> 2" in err and "--extend" in err
    assert main([*_tiny(tmp_path), "--set", "epochs=1", "--set", "lr=0.01"]) == 2
    assert "lr 0.05 -> 0.01" in capsys.readouterr().err
    assert main([*_tiny(tmp_path), "--set", "epochs=2", "--set", "lr=0.01", "--extend"]) == 2
    assert run.metrics_path.stat().st_mtime_ns == stamp and run.is_complete()  # untouched

    assert main([*_tiny(tmp_path), "--set", "epochs=2", "--extend"]) == 0
    assert "1 extended" in capsys.readouterr().out
    after = run.read_metrics()
    assert sorted(set(after.epoch)) == [0, 1, 2]
    assert not after.duplicated(["epoch", "split", "view", "layer", "metric"]).any()
    pd.testing.assert_frame_equal(after[after.epoch <= 1].reset_index(drop=True), before)
    assert run.done_path.read_text().strip() == "2"
    assert "extended from 1 to 2 epochs" in run.log_path.read_text()
    assert main([*_tiny(tmp_path), "--set", "epochs=1", "--extend"]) == 2  # never shrinks
    assert "only adds epochs" in capsys.readouterr().err
    assert main([*_tiny(tmp_path), "--set", "epochs=2"]) == 0  # now the same config: skipped
    assert "1 skipped" in capsys.readouterr().out


def test_sweep_leaves_runs_locked_by_a_live_process_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = Grid(
        ["digits"], ["small_cnn"], ["st"], ["linf"], [1], root=str(tmp_path),
        overrides={"epochs": 1, "steps": 1, "device": "cpu", "views": "clean"},
    )  # fmt: skip
    (config,) = expand(grid)
    with RunLock(config.out):  # e.g. an `ncrobust train` of the same directory
        assert status(config) == "running"
        assert run_sweep([config], progress=False) == {config.out: "busy"}
        assert "running" in capsys.readouterr().out
        assert not RunDirectory(Path(config.out)).exists()  # nothing trained, nothing written
    assert status(config) == "new"


def _rates_file(path: Path, **changes: object) -> Path:
    data = {
        "device": "cuda (test GPU)",
        "image_size": 32,
        "steps": 10,
        "train": {"vgg11_bn": {"st": 4000.0, "at": 500.0}},
        "measure": {"vgg11_bn": 6000.0},
        **changes,
    }
    path.write_text(json.dumps(data))
    return path


def test_dry_run_estimate_from_bench_rates(tmp_path: Path) -> None:
    rates = read_rates(_rates_file(tmp_path / "rates.json"))
    st, at = expand(Grid(["cifar10"], ["vgg11_bn"], ["st", "at"], ["linf"], [1]))
    assert measured_epochs(st) == 81  # epochs 0, 5, ..., 400
    attack = 1 / 500.0 - 1 / 4000.0  # seconds per image of PGD-10: AT's step less ST's
    # ST measures clean, pgd, gaussian, targeted on both splits: two of the four are attacks
    st_measure = 81 * (4 * 60_000 / 6000.0 + 2 * 60_000 * attack)
    assert estimate_parts(st, rates) == pytest.approx((400 * 50_000 / 4000.0, st_measure))
    # AT: clean, train_adv (the training's own), gaussian on train; clean, pgd, gaussian on test
    at_measure = 81 * (3 * 60_000 / 6000.0 + 10_000 * attack)
    assert estimate_seconds(at, rates) == pytest.approx(400 * 50_000 / 500.0 + at_measure)
    (inet,) = expand(Grid(["imagenette"], ["vgg11_bn"], ["at"], ["linf"], [1]))
    area, steps = (160 / 32) ** 2, (5 + 1) / (10 + 1)  # 160 px images, PGD-5
    assert estimate_seconds(inet, rates) == pytest.approx(
        400 * 9469 / 500.0 * area * steps
        + 81 * (3 * (9469 + 3925) / 6000.0 + 3925 * attack * steps) * area
    )
    (trades,) = expand(Grid(["cifar10"], ["vgg11_bn"], ["trades"], ["linf"], [1]))
    assert estimate_seconds(trades, rates) is None  # no rate for TRADES in the file
    text = dry_run([st, at, trades], rates)
    assert "81 measurements, 20,000,000 training images" in text
    total = (estimate_seconds(st, rates) or 0) + (estimate_seconds(at, rates) or 0)
    assert f"~{total / 3600:.1f} h on cuda (test GPU)" in text
    assert "1 runs without a rate not counted" in text
    assert f"GPU-hours: {total / 3600:.1f} with one run per GPU" in text
    packed = read_rates(
        _rates_file(tmp_path / "packed.json", packing={"runs_per_gpu": 4, "throughput_factor": 2.5})
    )
    text = dry_run([st, at], packed)
    hours = total / 3600 / 2.5
    assert f"GPU-hours: {hours:.1f} with 4 runs per GPU (x2.50 throughput" in text
    assert f"~{hours:.1f} h on 1 GPU, ~{hours / 8:.1f} h on 8 GPUs" in text


def test_dry_run_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    assert main(["sweep", "--grid", "paper-trades-bn", "--root", str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 runs, 4,800 epochs, 240,000,000 training images" in out
    assert "no rates given" in out and not root.exists()  # nothing trained or written
    rates = _rates_file(tmp_path / "r.json", train={"vgg11_bn": {"trades": 250.0}})
    assert main(["sweep", "--grid", "paper-trades-bn", "--dry-run", "--rates", str(rates)]) == 0
    out = capsys.readouterr().out
    assert "estimated compute" in out and "6 runs without a rate not counted" in out
    bad = _rates_file(tmp_path / "bad.json", measure={"vgg11_bn": 0})
    assert main(["sweep", "--grid", "digits", "--dry-run", "--rates", str(bad)]) == 2
    assert "rates must be > 0" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{}")
    assert (
        main(["sweep", "--grid", "digits", "--dry-run", "--rates", str(tmp_path / "junk.json")])
        == 2
    )
    assert "is not what `ncrobust bench train --write-rates` writes" in capsys.readouterr().err
    assert main(["sweep", "--grid", "digits", "--rates", str(rates)]) == 2
    assert "--rates is for the --dry-run estimate" in capsys.readouterr().err
