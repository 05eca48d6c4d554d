"""The demo's pieces in a reduced form: three runs, figures and the report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ncrobust.cli import main
from ncrobust.demo import DemoSettings, run_demo


def test_reduced_demo_writes_runs_figures_and_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    settings = DemoSettings(epochs=2, measure_every=1, steps=2, jobs=2, autoattack_points=0)
    paths = run_demo(settings, out)
    for mode in ("st", "at", "trades"):
        table = pd.read_parquet(out / mode / "metrics.parquet")
        assert (out / mode / "DONE").is_file()
        assert set(table.view) >= {"clean", "pgd", "gaussian", "targeted", "fit"}
        final = table[table.epoch == 2]
        assert set(final.layer) >= {"block1", "block2", "block3", "penultimate", "output"}
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"fig2.png", "fig3.png", "fig4.png", "fig7.png", "fig11.png", "fig12.png"} <= figures
    report = paths["report"].read_text()
    assert "## Findings" in report and "## Demo settings" in report
    assert "eps = 0.15" in report and "PGD-2" in report
    assert "## Robustness" in report  # AutoAttack is off here (its cost); see the next test


def test_demo_evaluates_its_final_models_with_autoattack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluation itself is tested in tests/analysis/test_evaluate.py; here, what the demo
    asks for: AutoAttack and PGD-10 on each final model, on the configured test points."""
    pytest.importorskip("torchattacks")
    from ncrobust.analysis import eval_cli
    from ncrobust.demo import _autoattack

    calls: list[tuple[list[str], dict[str, object]]] = []
    monkeypatch.setattr(
        eval_cli, "evaluate_runs", lambda runs, **kw: calls.append((list(runs), kw))
    )
    _autoattack(tmp_path, DemoSettings(jobs=1))
    assert sorted(run for runs, _ in calls for run in runs) == sorted(
        str(tmp_path / mode) for mode in ("st", "at", "trades")
    )
    for _, options in calls:
        assert options["attacks"] == "autoattack,pgd:steps=10" and options["limit"] == 180
    calls.clear()
    _autoattack(tmp_path, DemoSettings(jobs=1, autoattack_points=0))
    assert calls == []


def test_demo_refuses_a_non_empty_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep.txt").write_text("x")
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "x"
