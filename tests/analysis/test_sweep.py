"""sweep: grid expansion, and skipping / resuming / starting runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ncrobust.analysis.sweep import GRIDS, Grid, expand, run_sweep, status
from ncrobust.cli import main
from ncrobust.runlock import RunLock
from ncrobust.runs import RunDirectory
from ncrobust.training import train


def test_paper_grid_expands_to_the_papers_runs() -> None:
    g = GRIDS["paper"]
    grid = Grid(g["datasets"], g["models"], g["modes"], g["norms"], [int(s) for s in g["seeds"]])
    configs = expand(grid)
    assert len(configs) == 2 * 2 * 3 * 2 * 3
    l2 = [c for c in configs if c.norm == "l2" and c.dataset == "cifar100"]
    assert {round(c.eps * 255, 6) for c in l2} == {128.0}
    assert all(c.epochs == 400 for c in configs)
    assert len({c.out for c in configs}) == len(configs)


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
