"""Each verdict is computed from the data: it flips when the numbers cross its threshold."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ncrobust.analysis import Finding, Study, Thresholds, Verdict, evaluate_findings


def by_key(findings: list[Finding], key: str) -> list[Finding]:
    found = [f for f in findings if f.key == key]
    assert found, f"no finding {key}"
    return found


def test_every_finding_holds_on_paper_like_runs(paper_study: Study) -> None:
    findings = evaluate_findings(paper_study)
    assert [f.key for f in findings] == ["1", "2", "3", "4", "5a", "5a", "5b", "6", "6"]
    assert all(f.verdict is Verdict.HOLDS for f in findings), [
        (f.key, f.verdict, f.measured()) for f in findings if f.verdict is not Verdict.HOLDS
    ]
    f1 = by_key(findings, "1")[0]
    assert dict(f1.measured())["NC1 pgd / clean"] == pytest.approx(100.0)
    assert f1.epoch == 10 and f1.runs == "ST (3 seeds)"
    assert by_key(findings, "4")[0].runs == "TRADES (3 seeds) vs AT (3 seeds)"


# (finding, mode changed, last-epoch overrides, rising curves, thresholds under which it holds)
Key = tuple[str, str, str, str]
CASES: list[tuple[str, str, dict[Key, float], list[Key], dict[str, float]]] = [
    ("1", "st", {("train", "pgd", "penultimate", "nc1"): 0.4}, [], {"st_pgd_nc1_ratio": 5}),
    (
        "1",
        "st",
        {("train", "gaussian", "penultimate", "nc1"): 0.2},
        [],
        {"st_gaussian_nc1_ratio": 5},
    ),
    (
        "2",
        "st",
        {("train", "targeted", "penultimate", "angular_distance"): 0.7},
        [],
        {"targeted_angle": 0.8},
    ),
    (
        "2",
        "st",
        {("train", "targeted", "output", "target_accuracy"): 0.3},
        [],
        {"targeted_accuracy": 0.2},
    ),
    ("3", "at", {("train", "train_adv", "penultimate", "nc1"): 1.5}, [], {"at_nc1": 2}),
    ("3", "at", {}, [("train", "train_adv", "penultimate", "nc1")], {"at_nc1_peak_ratio": 1.01}),
    (
        "3",
        "at",
        {("train", "train_adv", "penultimate", "simplex_similarity"): 0.3},
        [],
        {"at_simplex_similarity": 0.4},
    ),
    (
        "3",
        "at",
        {("train", "train_adv", "penultimate", "ncc_accuracy"): 0.9},
        [],
        {"at_ncc_gap": 0.1},
    ),
    ("4", "trades", {("train", "clean", "penultimate", "nc1"): 0.5}, [], {"trades_nc1_ratio": 1.5}),
    (
        "5a",
        "at",
        {
            ("train", "clean", layer, "nc1"): v
            for layer, v in (("block1", 0.01), ("block2", 0.02), ("block3", 0.03))
        },
        [],
        {"layer_spearman": -1.0},
    ),
    (
        "5b",
        "at",
        {
            ("train", "clean", layer, "nc1"): v
            for layer, v in (("block1", 80.0), ("block2", 10.0), ("block3", 1.0))
        },
        [],
        {"layer_slope_margin": -1.0},
    ),
    ("6", "st", {("train", "pgd", "output", "accuracy"): 0.58}, [], {"ncc_robust_margin": 0.01}),
]


@pytest.mark.parametrize(("key", "mode", "overrides", "rising", "relaxed"), CASES)
def test_verdict_flips_when_the_data_crosses_the_threshold(
    fake: ModuleType,
    key: str,
    mode: str,
    overrides: dict[Key, float],
    rising: list[Key],
    relaxed: dict[str, Any],
) -> None:
    runs = []
    for m in ("at", "st", "trades"):
        changes: dict[str, Any] = {"overrides": overrides, "rising": rising} if m == mode else {}
        metrics, stats = fake.paper_rows(m, 2, **changes)  # seed 2: means equal base values
        runs.append(fake.memory_run(m, 2, metrics=metrics, stats=stats))
    study = Study.from_runs(runs)
    others = [f for f in evaluate_findings(study) if f.key != key]
    assert all(f.verdict is Verdict.HOLDS for f in others), "only the targeted finding changes"
    changed = by_key(evaluate_findings(study), key)[0]
    assert changed.verdict is Verdict.FAILS, changed.measured()
    # the same numbers hold under a looser threshold: the verdict follows the threshold shown
    loose = by_key(evaluate_findings(study, Thresholds(**relaxed)), key)[0]
    assert loose.verdict is Verdict.HOLDS, loose.measured()
    assert loose.measured() == changed.measured()


def test_thresholds_are_checked_and_documented() -> None:
    with pytest.raises(ValueError, match="st_pgd_nc1_ratio must be a finite number"):
        Thresholds(st_pgd_nc1_ratio=math.nan)
    meanings = Thresholds.describe()
    assert set(meanings) == {f for f in Thresholds.__dataclass_fields__}
    assert all(text.startswith("finding ") for text in meanings.values())


def test_missing_runs_and_views_are_not_measured_with_a_reason(
    fake: ModuleType, tmp_path: Path
) -> None:
    views = {"train": ("clean", "pgd"), "test": ("clean",)}  # no Gaussian, no targeted
    metrics, stats = fake.paper_rows("st", 2, layerwise=False, views=views)
    fake.write_run(tmp_path / "st", "st", 2, metrics=metrics, stats=stats)
    findings = evaluate_findings(Study.from_paths([tmp_path]))
    verdicts = {f.key: (f.verdict, f.reason) for f in findings}
    assert all(v is Verdict.NOT_MEASURED for v, _ in verdicts.values())
    assert "gaussian not measured" in verdicts["1"][1]
    assert "targeted view not measured" in verdicts["2"][1]
    assert verdicts["3"][1] == "no AT run"
    assert verdicts["4"][1] == "needs both a TRADES and an AT run"
    assert "fewer than 3 layers" in verdicts["5a"][1]
    assert "ST and an AT run" in verdicts["5b"][1]
    assert "no layerwise NCC accuracy" in verdicts["6"][1]


def test_a_nan_measurement_is_not_measured_rather_than_failed(
    fake: ModuleType, tmp_path: Path
) -> None:
    overrides = {("train", "train_adv", "penultimate", "simplex_similarity"): math.nan}
    metrics, stats = fake.paper_rows("at", 2, overrides=overrides)
    fake.write_run(tmp_path / "at", "at", 2, metrics=metrics, stats=stats)
    (f3,) = by_key(evaluate_findings(Study.from_paths([tmp_path])), "3")
    assert f3.verdict is Verdict.NOT_MEASURED
    assert "simplex similarity train_adv vs clean" in f3.reason
