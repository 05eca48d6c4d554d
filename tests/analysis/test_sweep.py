"""sweep: grid expansion, and skipping / resuming / starting runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ncrobust.analysis.sweep import GRIDS, Grid, expand, run_sweep, status
from ncrobust.cli import main
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


def test_sweep_skips_done_resumes_interrupted_and_starts_new(tmp_path: Path) -> None:
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
