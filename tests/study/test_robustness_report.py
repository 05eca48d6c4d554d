"""The report's robustness table: seeds aggregated, PGD-10 as trained and on the same points,
how much PGD-10 overstates robust accuracy, and a masking flag that rests on evidence."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from ncrobust.cli import main
from ncrobust.runs.directory import RunDirectory
from ncrobust.runs.tables import robustness_frame
from ncrobust.study.robustness import FLAG, OVERSTATES, robustness_table
from ncrobust.study.study import Study

MakeRun = Callable[..., Path]
EPS = 8 / 255
AUTO = {1: 0.36, 2: 0.40, 3: 0.44}  # mean 0.40, std (ddof=1) 0.04
PGD50 = {1: 0.45, 2: 0.46, 3: 0.47}


CHECKED = {  # the masking checks of a standard model: no evidence
    "pgd10_accuracy_eps_x2": 0.02,
    "pgd10_accuracy_eps_x4": 0.0,
    "zero_gradient_fraction": 0.0,
    "output_variation": 0.0,
    "probability_output": 0.0,
    "square_gain": 0.0,
    "points": 360.0,
}


def rows(seed: int, **evidence: float) -> pd.DataFrame:
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
            # PGD-10 on AutoAttack's points: 0.10 above it (PGD-10 as trained is 0.5 ± 0.05)
            row(10, "masking-checks", EPS, "pgd10_accuracy", AUTO[seed] + 0.10),
            *(row(10, "masking-checks", EPS, m, v) for m, v in (CHECKED | evidence).items()),
        ]
    )


@pytest.fixture
def runs(make_run: MakeRun) -> Path:
    for seed in (1, 2, 3):
        path = make_run(f"at_seed{seed}", mode="at", seed=seed)
        rows(seed).to_parquet(RunDirectory(path).robustness_path, index=False)
    return make_run("st_seed1", mode="st", seed=1).parent


def test_table_aggregates_seeds_and_states_the_gap_without_a_flag(runs: Path) -> None:
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
    # the gap is PGD-10 on the same points minus AutoAttack (not PGD-10 as trained, 0.5)
    assert main_row.pgd_same is not None and main_row.pgd_same.mean == pytest.approx(0.50)
    assert main_row.gap == pytest.approx(0.10) and table.overstated(main_row)
    assert not robustness_table(study, masking_gap=0.2).overstated(main_row)
    # a large gap alone is no evidence of masking
    assert main_row.evidence() == [] and not table.flagged(main_row)
    # another eps has neither PGD-10 from training nor masking checks
    assert wide_row.eps == pytest.approx(2 * EPS) and wide_row.pgd_trained is None
    assert math.isnan(wide_row.gap) and not table.flagged(wide_row)
    assert table.cells()[1][-2] == "not checked"


@pytest.mark.parametrize(
    ("evidence", "text"),
    [
        ({"square_gain": 0.03}, "Square broke 3.0% of the points the white-box stages"),
        ({"transfer_gain": 0.05}, "PGD-10 transferred from another checkpoint broke 5.0%"),
        ({"pgd10_accuracy_eps_x4": 0.4}, "PGD-10 accuracy 0.40 at 4× eps (does not fall to 0)"),
        ({"zero_gradient_fraction": 0.25}, "zero input gradient on 25.0% of the points"),
        ({"output_variation": 0.01}, "outputs change between forward passes"),
        ({"probability_output": 1.0}, "outputs are probabilities"),
    ],
)
def test_one_seed_with_evidence_flags_the_group(
    make_run: MakeRun, evidence: dict[str, float], text: str
) -> None:
    for seed in (1, 2):
        path = make_run(f"at_seed{seed}", mode="at", seed=seed)
        found = rows(seed, **evidence) if seed == 2 else rows(seed)
        found.to_parquet(RunDirectory(path).robustness_path, index=False)
    table = robustness_table(Study.from_paths([path.parent]))
    row = min(table.rows, key=lambda r: r.eps)
    assert table.flagged(row) and any(text in e for e in row.evidence()), row.evidence()
    assert table.cells()[0][-1] == FLAG


def test_evidence_just_below_the_original_suites_thresholds_is_silent(make_run: MakeRun) -> None:
    path = make_run("at_seed1", mode="at", seed=1)
    quiet = {"square_gain": 0.002, "pgd10_accuracy_eps_x4": 0.05, "output_variation": 1e-4}
    rows(1, **quiet).to_parquet(RunDirectory(path).robustness_path, index=False)
    table = robustness_table(Study.from_paths([path.parent]))
    assert not table.flagged(min(table.rows, key=lambda r: r.eps))


def test_report_shows_the_gap_and_no_flag_without_evidence(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--figures", "none"]) == 0
    text = (out / "report.md").read_text()
    assert "## Robustness" in text and "PGD-10 (as trained)" in text and OVERSTATES in text
    line = next(li for li in text.splitlines() if "0.4000 ± 0.0400" in li)
    assert "0.5000 ± 0.0500" in line and "+0.1000 (!)" in line and FLAG not in line
    assert "above 0.05 (--masking-gap)" in text
    assert "Not evaluated: ST" in text
    html = (out / "report.html").read_text()
    section = html[html.index("<h2>Robustness</h2>") :].split("</table>")[0]
    assert "+0.1000 (!)" in section and '<td class="fails">' not in section

    assert main(["report", str(runs), "--out", str(out), "--figures", "none",
                 "--masking-gap", "0.2"]) == 0  # fmt: skip
    text = (out / "report.md").read_text()
    line = next(li for li in text.splitlines() if "0.4000 ± 0.0400" in li)
    assert "+0.1000 |" in line and "above 0.2 (--masking-gap)" in text
    capsys.readouterr()
    assert main(["report", str(runs), "--out", str(out), "--masking-gap", "-1"]) == 2
    assert "--masking-gap must be >= 0" in capsys.readouterr().err


def test_report_without_evaluations_says_how_to_get_them(make_run: MakeRun, tmp_path: Path) -> None:
    run = make_run("st_seed1", mode="st", seed=1)
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out), "--figures", "none"]) == 0
    assert "run `ncrobust eval RUN`" in (out / "report.md").read_text()
