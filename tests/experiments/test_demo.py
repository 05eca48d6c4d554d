"""The demo's pieces in a reduced form: seven runs, figures and the report, twice alike."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ncrobust.cli import main
from ncrobust.config import read_config
from ncrobust.evaluation import runs as eval_runs
from ncrobust.experiments.demo import MODES, DemoSettings, run_demo

REDUCED = DemoSettings(epochs=2, measure_every=1, steps=2, jobs=2, autoattack_points=0)


def test_reduced_demo_writes_runs_figures_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    paths = run_demo(REDUCED, out)
    lines = capsys.readouterr().out.strip().splitlines()  # the parent's lines: phases, progress
    assert lines[0] == "demo: phase 1 of 3: training 7 runs of 2 epochs (2 at a time)"
    done = [line.split(":")[1] for line in lines if " of 7 done: " in line]
    assert done == [f" run {k} of 7 done" for k in range(1, 8)]
    assert "demo: phase 2 of 3: AutoAttack skipped (autoattack_points = 0)" in lines
    assert "demo: phase 3 of 3: figures and the findings report" in lines
    assert lines[-2:] == [f"report: {out / 'report.md'}", f"report (HTML): {out / 'report.html'}"]
    assert (out / "report.html").is_file() and paths["html"] == out / "report.html"
    assert MODES == ("st", "at", "trades", "trades-bneval")
    names = [run.name for run in REDUCED.runs()]
    assert names == [
        "st",
        "st-seed2",
        "at",
        "at-seed2",
        "at-eps0.1",
        "trades",
        "trades-bneval",
    ]
    for name in names:
        table = pd.read_parquet(out / name / "metrics.parquet")
        assert (out / name / "DONE").is_file()
        assert set(table.view) >= {"clean", "pgd", "gaussian", "targeted@eps=0.3", "fit"}
        assert "targeted" not in set(table.view)  # the targeted view has its own radius only
        final = table[table.epoch == 2]
        assert set(final.layer) >= {"block1", "block2", "block3", "penultimate", "output"}
    configs = {name: read_config(out / name / "config.yaml") for name in names}
    # ST and AT run with two seeds, alike in every other setting (one group each)
    for kind in ("st", "at"):
        first, second = configs[kind].to_dict(), configs[f"{kind}-seed2"].to_dict()
        assert (first.pop("seed"), second.pop("seed")) == (1, 2)
        assert {k: v for k, v in first.items() if k != "out"} == {
            k: v for k, v in second.items() if k != "out"
        }
    # Appendix H: ST attacked at smaller radii; AT trained at two radii, both attacked at 0.15
    assert {"pgd@eps=0.05", "pgd@eps=0.1"} <= set(
        pd.read_parquet(out / "st" / "metrics.parquet").view
    )
    assert configs["at-eps0.1"].eps == 0.1 and configs["at"].eps == 0.15
    assert configs["at-eps0.1"].views == configs["at"].views
    for name in ("at", "at-eps0.1"):
        at_table = pd.read_parquet(out / name / "metrics.parquet")
        common = at_table[at_table.view == "pgd@eps=0.15"]
        assert set(common.split) == {"train"} and len(common)
    assert configs["trades"].mode == configs["trades-bneval"].mode == "trades"
    assert (configs["trades"].trades_bn_eval, configs["trades-bneval"].trades_bn_eval) == (
        False,
        True,
    )
    assert "targeted@eps=0.3" in configs["st"].views  # the radius is recorded in the config
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"fig2.png", "fig3.png", "fig4.png", "fig7.png", "fig11.png", "fig12.png"} <= figures
    report = paths["report"].read_text()
    assert "## Findings" in report and "## Demo settings" in report
    assert "eps = 0.15" in report and "PGD-2" in report
    # the stated hit rate of the targeted view is the ST run's own last measurement
    st = pd.read_parquet(out / "st" / "metrics.parquet")
    hits = st.query("epoch == 2 and view == 'targeted@eps=0.3' and metric == 'target_accuracy'")
    train = hits[hits.split == "train"].value.item()
    assert "radius eps = 0.3 (step 0.075" in report
    assert f"{train:.1%} (train)" in report
    # a second demo with the same settings, replacing the first, writes the same report
    (out / "figures" / "stale.png").write_bytes(b"an old figure")
    again = run_demo(REDUCED, out, overwrite=True)["report"].read_text()
    assert again == report
    assert not (out / "figures" / "stale.png").exists()  # the old demo's figures are gone
    assert "## Robustness" in report  # AutoAttack is off here (its cost); see the next test


def test_demo_evaluates_its_final_models_with_autoattack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluation itself is tested in tests/analysis/test_evaluate.py; here, what the demo
    asks for: AutoAttack and PGD-10 on each final model, on the configured test points."""
    pytest.importorskip("torchattacks")
    from ncrobust.experiments.demo import _autoattack

    calls: list[tuple[list[str], dict[str, object]]] = []
    monkeypatch.setattr(
        eval_runs, "evaluate_runs", lambda runs, **kw: calls.append((list(runs), kw))
    )
    _autoattack(tmp_path, DemoSettings(jobs=1))
    assert sorted(run for runs, _ in calls for run in runs) == sorted(
        str(tmp_path / mode) for mode in MODES
    )
    for _, options in calls:
        assert options["attacks"] == "autoattack,pgd:steps=10" and options["limit"] == 120
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
    # --overwrite replaces an earlier demo only: other contents are never deleted
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1", "--overwrite"]) == 2
    assert "holds keep.txt: choose another --out" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "x"
    (tmp_path / "keep.txt").unlink()
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "notes.txt").write_text("mine")  # a folder of a run's name, not a run
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1", "--overwrite"]) == 2
    assert "holds st: choose another --out" in capsys.readouterr().err
    assert (tmp_path / "st" / "notes.txt").read_text() == "mine"
    (tmp_path / "st" / "notes.txt").unlink()
    (tmp_path / "st").rmdir()
    elsewhere = tmp_path.parent / f"{tmp_path.name}-images"
    elsewhere.mkdir()
    (elsewhere / "holiday.png").write_bytes(b"png")
    (tmp_path / "figures").symlink_to(elsewhere)  # a demo --overwrite must not follow it
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1", "--overwrite"]) == 2
    assert "symbolic links (figures)" in capsys.readouterr().err
    assert (elsewhere / "holiday.png").read_bytes() == b"png"
    assert main(["demo", "--out", str(tmp_path / "new"), "--targeted-eps", "2"]) == 2
    assert "targeted@eps=2/255" in capsys.readouterr().err  # linf: larger than the pixel range
    assert not (tmp_path / "new").exists()
