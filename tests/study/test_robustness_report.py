"""The report's robustness table: seeds aggregated, PGD-10 as trained, the masking flag."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from ncrobust.cli import main
from ncrobust.runs.directory import RunDirectory
from ncrobust.runs.tables import robustness_frame
from ncrobust.study.robustness import FLAG, robustness_table
from ncrobust.study.study import Study

MakeRun = Callable[..., Path]
EPS = 8 / 255
AUTO = {1: 0.36, 2: 0.40, 3: 0.44}  # mean 0.40, std (ddof=1) 0.04
PGD50 = {1: 0.45, 2: 0.46, 3: 0.47}


def rows(seed: int) -> pd.DataFrame:
    def row(epoch: int, attack: str, eps: float, metric: str, value: float) -> dict[str, object]:
        return {"epoch": epoch, "split": "test", "attack": attack, "norm": "linf", "eps": eps,
                "metric": metric, "value": value}  # fmt: skip

    return robustness_frame(
        [
            row(5, "autoattack", EPS, "accuracy", 0.9),  # an older epoch: not shown
            row(10, "clean", 0.0, "accuracy", 0.95),
            row(10, "clean", 0.0, "points", 360.0),
            row(10, "autoattack", EPS, "accuracy", AUTO[seed]),
            row(10, "autoattack", EPS, "accuracy_after_apgd-ce", AUTO[seed] + 0.01),
            row(10, "autoattack", EPS, "points", 360.0),
            row(10, "pgd:steps=50:restarts=5", EPS, "accuracy", PGD50[seed]),
            row(10, "pgd:steps=50:restarts=5", EPS, "points", 360.0),
            row(10, "autoattack", 2 * EPS, "accuracy", 0.1),
            row(10, "autoattack", 2 * EPS, "points", 360.0),
            {**row(10, "autoattack", EPS, "accuracy", 0.0), "split": "train"},  # not shown
        ]
    )


@pytest.fixture
def runs(make_run: MakeRun) -> Path:
    for seed in (1, 2, 3):
        path = make_run(f"at_seed{seed}", mode="at", seed=seed)
        rows(seed).to_parquet(RunDirectory(path).robustness_path, index=False)
    return make_run("st_seed1", mode="st", seed=1).parent


def test_table_aggregates_seeds_and_flags_the_gap(runs: Path) -> None:
    study = Study.from_paths([runs])
    table = robustness_table(study)
    at = next(g.label for g in study.groups if g.mode == "at")
    st = next(g.label for g in study.groups if g.mode == "st")
    assert table.missing == [st]
    assert table.attacks == ["autoattack", "pgd:steps=50:restarts=5"]
    main_row, wide_row = sorted(table.rows, key=lambda r: r.eps)
    assert (main_row.group, main_row.epochs, main_row.seeds, main_row.points) == (
        at,
        (10,),
        3,
        (360,),
    )
    # PGD-10 as trained: the fixture's test/pgd accuracy 0.5 × seed factors 0.9, 1.0, 1.1
    assert main_row.pgd_trained is not None
    assert main_row.pgd_trained.mean == pytest.approx(0.5)
    assert main_row.pgd_trained.std == pytest.approx(0.05)
    auto = main_row.attacks["autoattack"]
    assert (auto.mean, auto.std, auto.n) == (pytest.approx(0.40), pytest.approx(0.04), 3)
    assert main_row.attacks["pgd:steps=50:restarts=5"].mean == pytest.approx(0.46)
    assert main_row.clean is not None and main_row.clean.mean == pytest.approx(0.95)
    assert main_row.gap == pytest.approx(0.10) and table.flagged(main_row)
    # another eps has no PGD-10 from training to compare with
    assert wide_row.eps == pytest.approx(2 * EPS) and wide_row.pgd_trained is None
    assert math.isnan(wide_row.gap) and not table.flagged(wide_row)
    assert not robustness_table(study, masking_gap=0.2).flagged(main_row)


def test_report_shows_the_table_and_the_threshold_flag(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--figures", "none"]) == 0
    text = (out / "report.md").read_text()
    assert "## Robustness" in text and "PGD-10 (as trained)" in text
    line = next(li for li in text.splitlines() if "0.4000 ± 0.0400" in li)
    assert "0.5000 ± 0.0500" in line and "+0.1000" in line and line.endswith(f"{FLAG} |")
    assert "more than 0.05 (--masking-gap)" in text
    assert "Not evaluated: ST" in text
    html = (out / "report.html").read_text()
    assert "<h2>Robustness</h2>" in html and '<td class="fails">' + FLAG in html

    assert main(["report", str(runs), "--out", str(out), "--figures", "none",
                 "--masking-gap", "0.2"]) == 0  # fmt: skip
    text = (out / "report.md").read_text()
    line = next(li for li in text.splitlines() if "0.4000 ± 0.0400" in li)
    assert not line.endswith(f"{FLAG} |") and "more than 0.2 (--masking-gap)" in text
    capsys.readouterr()
    assert main(["report", str(runs), "--out", str(out), "--masking-gap", "-1"]) == 2
    assert "--masking-gap must be >= 0" in capsys.readouterr().err


def test_report_without_evaluations_says_how_to_get_them(make_run: MakeRun, tmp_path: Path) -> None:
    run = make_run("st_seed1", mode="st", seed=1)
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out), "--figures", "none"]) == 0
    assert "run `ncrobust eval RUN`" in (out / "report.md").read_text()
