"""Each verdict is computed from the data: it flips when the numbers cross its threshold."""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ncrobust.analysis import Finding, Study, Thresholds, Verdict, evaluate_findings


def by_key(findings: list[Finding], key: str) -> list[Finding]:
    found = [f for f in findings if f.key == key]
    assert found, f"no finding {key}"
    return found


PAPER_KEYS = ["1", "1b", "2", "3", "4", "5a", "5a", "5b", "6", "6", "6b", "6b", "7", "8"]
APPENDIX = {"9a", "9b"}  # need runs at several eps (tested below)


def test_every_finding_holds_on_paper_like_runs(paper_study: Study) -> None:
    findings = evaluate_findings(paper_study)
    assert [f.key for f in findings if f.key not in APPENDIX] == PAPER_KEYS
    decided = [f for f in findings if f.key not in APPENDIX]
    assert all(f.verdict is Verdict.HOLDS for f in decided), [
        (f.key, f.verdict, f.reason, f.measured())
        for f in decided
        if f.verdict is not Verdict.HOLDS
    ]
    f1 = by_key(findings, "1")[0]
    assert dict(f1.measured())["NC1 pgd / clean"] == pytest.approx(100.0)
    assert f1.epoch == 10 and f1.runs == "ST (3 seeds)"
    assert by_key(findings, "4")[0].runs == "TRADES (3 seeds) vs AT (3 seeds)"
    f3 = dict(by_key(findings, "3")[0].measured())
    # relative to the first epoch after initialisation (epoch 5 here: 2.5x the final value)
    assert f3["NC1 clean final / after epoch 5"] == pytest.approx(0.4)
    assert f3["NC1 train_adv / clean"] == pytest.approx(0.5 / 0.3)
    assert f3["NC1 clean / (C-1)"] == pytest.approx(0.1)
    f7 = dict(by_key(findings, "7")[0].measured())
    assert f7["mean angle(mu_c, mu'_c) (rad)"] == pytest.approx(0.115)


# (finding, mode changed, last-epoch overrides, rising curves, thresholds under which it holds)
Key = tuple[str, str, str, str]
NCC_EARLY_LOW = {
    ("train", "pgd", layer, "ncc_accuracy"): v
    for layer, v in (("block1", 0.15), ("block2", 0.1), ("block3", 0.05))
}
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
        "1b",
        "st",
        {("train", "pgd", "penultimate", "nc2_equiangular"): 0.15},
        [],
        {"st_pgd_nc2_ratio": 1.2},
    ),
    (
        "2",
        "st",
        {("train", "targeted", "penultimate", "simplex_similarity"): 0.7},
        [],
        {"targeted_angle_fraction": 0.4},
    ),
    (
        "3",
        "at",
        {("train", "train_adv", "penultimate", "nc1"): 0.2},
        [],
        {"at_perturbed_above_clean": 0.5},
    ),
    ("3", "at", {}, [("train", "train_adv", "penultimate", "nc1")], {"at_nc1_drop": 2.0}),
    (
        "3",
        "at",
        {("train", "train_adv", "penultimate", "simplex_similarity"): 0.6},
        [],
        {"at_simplex_fraction": 0.4},
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
        "4",
        "trades",
        {("train", "clean", "penultimate", "nc2_equiangular"): 0.15},
        [],
        {"trades_nc2_ratio": 1.2},
    ),
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
    ("6", "st", NCC_EARLY_LOW, [], {"ncc_robust_margin": 0.1}),
    (
        "6b",
        "st",
        {("train", "pgd", "penultimate", "ncc_accuracy"): 0.3},
        [],
        {"ncc_fade_margin": 0.5},
    ),
    ("8", "st", {("train", "pgd", "block1", "nc1"): 40.0}, [], {"early_nc1_ratio": 6.0}),
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
    others = [f for f in evaluate_findings(study) if f.key != key and f.key not in APPENDIX]
    assert all(f.verdict is Verdict.HOLDS for f in others), [
        (f.key, f.reason, f.measured()) for f in others if f.verdict is not Verdict.HOLDS
    ]
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
    assert all(text.startswith(("finding", "precondition")) for text in meanings.values())
    sources = Thresholds.sources()
    assert set(sources) == set(meanings)
    assert all(re.search(r"(Sec|Fig|App)\. ", text) for text in sources.values()), sources


def test_missing_runs_and_views_are_not_measured_with_a_reason(
    fake: ModuleType, tmp_path: Path
) -> None:
    views = {"train": ("clean", "pgd"), "test": ("clean",)}  # no Gaussian, no targeted
    metrics, stats = fake.paper_rows("st", 2, layerwise=False, views=views)
    fake.write_run(tmp_path / "st", "st", 2, metrics=metrics, stats=stats)
    findings = evaluate_findings(Study.from_paths([tmp_path]))
    verdicts = {f.key: (f.verdict, f.reason) for f in findings}
    decided = {"1b", "7"}  # pgd and its attack statistics were measured
    assert all(v is Verdict.NOT_MEASURED for k, (v, _) in verdicts.items() if k not in decided)
    assert verdicts["1b"][0] is Verdict.HOLDS and verdicts["7"][0] is Verdict.HOLDS
    assert "pgd measured at fewer than 2 eps" in verdicts["9a"][1]
    assert "training eps" in verdicts["9b"][1]
    assert "gaussian not measured" in verdicts["1"][1]
    assert "targeted view not measured" in verdicts["2"][1]
    assert verdicts["3"][1] == "no AT run"
    assert verdicts["4"][1] == "needs both a TRADES and an AT run"
    assert "no layerwise measurement" in verdicts["5a"][1]
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


# -- inconclusive: a precondition of the claim is not met -----------------------------------------

TERMINAL = ("train", "clean", "output", "accuracy")
INCONCLUSIVE: list[tuple[str, str, dict[Key, float], str, dict[str, float]]] = [
    (
        "1",
        "st",
        {("train", "pgd", "output", "accuracy"): 0.7},
        "network accuracy on pgd",
        {"attack_success": 0.8},
    ),
    ("1b", "st", {TERMINAL: 0.9}, "training accuracy (clean)", {"terminal_accuracy": 0.85}),
    (
        "2",
        "st",
        {("train", "targeted", "output", "target_accuracy"): 0.4},
        "target accuracy",
        {"targeted_accuracy": 0.3},
    ),
    (
        "3",
        "at",
        {("train", "train_adv", "output", "accuracy"): 0.93},
        "training accuracy (train_adv)",
        {"terminal_accuracy": 0.85},
    ),
    ("4", "trades", {TERMINAL: 0.9}, "training accuracy (clean)", {"terminal_accuracy": 0.85}),
    (
        "7",
        "st",
        {("train", "pgd", "output", "accuracy"): 0.7},
        "network accuracy on pgd",
        {"attack_success": 0.8},
    ),
]


@pytest.mark.parametrize(("key", "mode", "overrides", "quantity", "relaxed"), INCONCLUSIVE)
def test_an_unmet_precondition_is_inconclusive_not_a_failure(
    fake: ModuleType,
    key: str,
    mode: str,
    overrides: dict[Key, float],
    quantity: str,
    relaxed: dict[str, float],
) -> None:
    runs = []
    for m in ("at", "st", "trades"):
        metrics, stats = fake.paper_rows(m, 2, overrides=overrides if m == mode else None)
        runs.append(fake.memory_run(m, 2, metrics=metrics, stats=stats))
    study = Study.from_runs(runs)
    (changed,) = [f for f in by_key(evaluate_findings(study), key) if "test data" not in f.claim]
    assert changed.verdict is Verdict.INCONCLUSIVE
    assert changed.reason.startswith(f"precondition not met: {quantity} = ")
    (relaxed_finding,) = [
        f
        for f in by_key(evaluate_findings(study, Thresholds(**relaxed)), key)
        if "test data" not in f.claim
    ]
    assert relaxed_finding.verdict is Verdict.HOLDS, relaxed_finding.reason


def test_too_few_layers_is_inconclusive(fake: ModuleType) -> None:
    runs = []
    for m in ("st", "at"):
        metrics, stats = fake.paper_rows(m, 2)
        metrics = [r for r in metrics if r["layer"] not in ("block1", "block2")]
        runs.append(fake.memory_run(m, 2, metrics=metrics, stats=stats))
    findings = evaluate_findings(Study.from_runs(runs))
    for key in ("5a", "5b", "8"):
        for f in by_key(findings, key):
            assert f.verdict is Verdict.INCONCLUSIVE, (key, f.reason)
            assert "measured layers = 2, needs >= 3 (min_layers)" in f.reason
    relaxed = evaluate_findings(Study.from_runs(runs), Thresholds(min_layers=2))
    assert all(f.verdict is not Verdict.INCONCLUSIVE for f in by_key(relaxed, "5a"))


# -- the targeted view with its own radius, the between-class baseline ----------------------------


def test_targeted_view_with_its_own_radius_is_the_targeted_view(fake: ModuleType) -> None:
    views = {"train": ("clean", "pgd", "gaussian", "targeted", "targeted@eps=0.25")}
    weak = ("train", "targeted", "output", "target_accuracy")
    metrics, stats = fake.paper_rows("st", 2, overrides={weak: 0.3}, views=views)
    (f2,) = by_key(
        evaluate_findings(Study.from_runs([fake.memory_run("st", 2, metrics, stats)])), "2"
    )
    assert f2.verdict is Verdict.HOLDS  # the plain targeted view (30 % reached) is not used
    assert dict(f2.measured())["targeted attack eps"] == pytest.approx(0.25)
    assert dict(f2.measured())["target accuracy"] == pytest.approx(0.95)
    assert "targeted view targeted@eps=0.25 (eps 0.25)" in f2.notes


def test_targeted_non_centred_angle_is_judged_against_the_runs_between_class_angle(
    fake: ModuleType,
) -> None:
    def finding(between: float) -> Finding:
        metrics, stats = fake.paper_rows("st", 2)
        for epoch in fake.EPOCHS:
            metrics.append(
                {
                    "epoch": epoch,
                    "split": "train",
                    "view": "clean",
                    "layer": "penultimate",
                    "metric": "between_class_angle",
                    "value": between,
                }
            )
        (f2,) = by_key(
            evaluate_findings(Study.from_runs([fake.memory_run("st", 2, metrics, stats)])), "2"
        )
        return f2

    # angular distance 0.2 rad: small against 1.2 rad between classes, not against 0.5 rad
    holds, fails = finding(1.2), finding(0.5)
    assert holds.verdict is Verdict.HOLDS and fails.verdict is Verdict.FAILS
    assert dict(fails.measured())[
        "angular distance targeted vs clean / clean between-class angle"
    ] == pytest.approx(0.4)
    unjudged = by_key(evaluate_findings(Study.from_runs([fake.memory_run("st", 2)])), "2")[0]
    assert len(unjudged.checks) == 1 and "between_class_angle" in " ".join(unjudged.notes)


# -- Appendix H -----------------------------------------------------------------------------------


def test_st_nc1_rising_with_attack_eps_flips(fake: ModuleType) -> None:
    views = {"train": ("clean", "pgd", "pgd@eps=0.00784314", "pgd@eps=0.0156863")}

    def finding(overrides: dict[Key, float]) -> Finding:
        metrics, stats = fake.paper_rows("st", 2, layerwise=False, views=views, overrides=overrides)
        return by_key(
            evaluate_findings(Study.from_runs([fake.memory_run("st", 2, metrics, stats)])), "9a"
        )[0]

    rising = finding({})
    assert rising.verdict is Verdict.HOLDS, rising.reason
    values = dict(rising.measured())
    assert values["NC1 pgd eps=2/255"] == pytest.approx(1.25)
    assert values["NC1 pgd eps=8/255"] == pytest.approx(5.0)  # the plain pgd view, the run's eps
    assert values["smallest NC1 ratio between consecutive eps"] == pytest.approx(2.0, rel=1e-5)
    bump = finding({("train", "pgd@eps=0.0156863", "penultimate", "nc1"): 6.0})
    assert bump.verdict is Verdict.FAILS
    assert finding({TERMINAL: 0.5}).verdict is Verdict.INCONCLUSIVE


def test_at_collapse_at_every_training_eps_flips(fake: ModuleType) -> None:
    def finding(rising_at_4: bool) -> Finding:
        runs = []
        for k in (2, 4, 8):
            rising = (
                [("train", "train_adv", "penultimate", "nc1")] if (rising_at_4 and k == 4) else []
            )
            metrics, stats = fake.paper_rows("at", 2, rising=rising)
            runs.append(fake.memory_run("at", 2, metrics, stats, eps=k / 255, alpha=k / 1020))
        return by_key(evaluate_findings(Study.from_runs(runs)), "9b")[0]

    holds, fails = finding(False), finding(True)
    assert holds.verdict is Verdict.HOLDS and len(holds.checks) == 3
    assert fails.verdict is Verdict.FAILS
    assert [c.passed for c in fails.checks] == [True, False, True]


# -- TRADES with frozen BN and the original -------------------------------------------------------


def test_both_trades_variants_are_judged_against_the_same_at_run(fake: ModuleType) -> None:
    runs = [fake.memory_run("at", 2)]
    for frozen, nc1 in ((True, 2.0), (False, 0.6)):
        over = {("train", "clean", "penultimate", "nc1"): nc1}
        metrics, stats = fake.paper_rows("trades", 2, overrides=over)
        runs.append(fake.memory_run("trades", 2, metrics, stats, trades_bn_eval=frozen))
    f4 = by_key(evaluate_findings(Study.from_runs(runs)), "4")
    assert [f.runs for f in f4] == [
        "TRADES · frozen BN, as released (1 seed) vs AT (1 seed)",
        "TRADES (1 seed) vs AT (1 seed)",
    ]
    assert [f.verdict for f in f4] == [Verdict.HOLDS, Verdict.FAILS]
    assert dict(f4[1].measured())["NC1 clean TRADES / AT"] == pytest.approx(2.0)


def test_untargeted_leap_flips_with_the_angle_of_predicted_class_means(fake: ModuleType) -> None:
    def finding(scale: float, t: Thresholds | None = None) -> Finding:
        metrics, stats = fake.paper_rows("st", 2)
        for row in stats:
            if row["statistic"] == "angle" and row["view"] == "pgd":
                row["value"] *= scale
        study = Study.from_runs([fake.memory_run("st", 2, metrics, stats)])
        return by_key(evaluate_findings(study, t), "7")[0]

    near = finding(1.0)
    assert near.verdict is Verdict.HOLDS
    ratio = dict(near.measured())["mean angle(mu_c, mu'_c) / arccos(-1/(C-1))"]
    assert ratio == pytest.approx(0.115 / math.acos(-1 / 3))
    far = finding(5.0)  # 0.575 rad: a third of the angle between classes, no leap
    assert far.verdict is Verdict.FAILS
    assert finding(5.0, Thresholds(leap_angle_fraction=0.4)).verdict is Verdict.HOLDS


def test_layer_divergence_verdict_follows_its_threshold(paper_study: Study) -> None:
    (f8,) = by_key(evaluate_findings(paper_study), "8")
    divergence = dict(f8.measured())["(NC1 pgd / clean) last layer / first layer"]
    assert divergence == pytest.approx((5.0 / 0.05) / (5.0 / 8.0))  # 160
    assert f8.verdict is Verdict.HOLDS
    (strict,) = by_key(evaluate_findings(paper_study, Thresholds(layer_divergence=200)), "8")
    assert strict.verdict is Verdict.FAILS
