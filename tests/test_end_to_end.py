"""Real (tiny) ST and AT runs of the trainer, plotted and reported through the commands."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from ncrobust.analysis import Study, figure2
from ncrobust.cli import main
from ncrobust.runs.directory import RunDirectory


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """ST and AT on digits: 1 epoch, every view, every layer at the end, PGD-2."""
    root = tmp_path_factory.mktemp("real")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster than two on a busy CPU
    try:
        for mode in ("st", "at"):
            code = main([
                "train", "--dataset", "digits", "--model", "small_cnn", "--mode", mode,
                "--epochs", "1", "--measure-every", "1", "--steps", "2", "--eps", "0.1",
                "--alpha", "0.05", "--views", "all", "--final-layers", "all",
                "--out", str(root / mode), "--quiet",
            ])  # fmt: skip
            assert code == 0
    finally:
        torch.set_num_threads(threads)
    yield root


def test_real_runs_are_plotted_and_reported(real_runs: Path, tmp_path: Path) -> None:
    figures = tmp_path / "figures"
    argv = ["plot", str(real_runs), "--out", str(figures), "--formats", "png"]
    assert main([*argv, "--figures", "fig3,fig4,fig7,fig15"]) == 0
    # no TRADES run, no eps study: Figures 4 and 15 are skipped, not drawn empty
    assert sorted(p.stem for p in figures.glob("*.png")) == ["fig3", "fig7"]

    assert main(["report", str(real_runs), "--out", str(tmp_path / "rep"), "--figures",
                 "none"]) == 0  # fmt: skip
    text = (tmp_path / "rep" / "report.md").read_text()
    for key in ("1", "2", "3", "5a", "5b", "6"):
        row = next(r for r in text.splitlines() if r.startswith(f"| {key} |"))
        # two epochs are no terminal phase: a claim that presumes one is inconclusive, saying why
        decided = row.endswith(
            ("| holds (1 seed, no interval) |", "| does not hold (1 seed, no interval) |")
        )
        assert decided or "| inconclusive (precondition not met: " in row, row
    assert "not measured (needs both a TRADES and an AT run)" in text


def test_figure2_shows_the_trainers_numbers(real_runs: Path) -> None:
    metrics = RunDirectory(real_runs / "st").read_metrics()
    rows = metrics[
        (metrics["split"] == "train")
        & (metrics["view"] == "clean")
        & (metrics["layer"] == "penultimate")
        & (metrics["metric"] == "nc1")
    ]
    rows = rows.sort_values("epoch")
    fig = figure2(Study.from_paths([real_runs / "st"]))
    nc1 = fig.axes[2]
    (line,) = [ln for ln in nc1.get_lines() if ln.get_label() == "clean · train"]
    assert list(line.get_xdata()) == rows["epoch"].tolist() == [0, 1]
    np.testing.assert_allclose(line.get_ydata(), rows["value"].to_numpy())
