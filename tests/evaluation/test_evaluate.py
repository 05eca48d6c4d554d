"""Robust accuracy under strong attacks: ``evaluate`` and ``ncrobust eval`` on a digits model."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from ncrobust.attacks import pgd
from ncrobust.cli import main
from ncrobust.config import build_config, read_config
from ncrobust.data import load_dataset
from ncrobust.errors import UsageError
from ncrobust.evaluation import robust_accuracy
from ncrobust.evaluation.robust_accuracy import (
    AutoAttackSpec,
    PGDSpec,
    evaluate,
    parse_attack,
)
from ncrobust.runs.checkpoint import LAST, build_model, load_checkpoint, restore
from ncrobust.runs.directory import RunDirectory
from ncrobust.runs.tables import ROBUSTNESS_COLUMNS, robustness_frame, upsert
from ncrobust.training import train

EPS = 0.15


@pytest.fixture(scope="module")
def at_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly adversarially trained small_cnn on digits (robust on part of the test set)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("eval") / "at"
        config = build_config(
            "digits",
            overrides={
                "mode": "at", "epochs": 6, "measure_every": 6, "steps": 3, "alpha": 0.075,
                "lr_milestones": [0.5, 0.75], "views": "clean,pgd", "checkpoint_every": 3,
                "device": "cpu", "out": str(out),
            },
        )  # fmt: skip
        train(config, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def at_model(at_run: Path) -> nn.Module:
    config = read_config(at_run / "config.yaml")
    model = build_model(config, load_dataset("digits"))
    restore(load_checkpoint(at_run / "checkpoints" / LAST), model)
    return model.eval()


def accuracy(table: pd.DataFrame, attack: str, metric: str = "accuracy", eps: float = EPS) -> float:
    rows = table[(table.attack == attack) & (table.metric == metric)]
    if attack != "clean":
        rows = rows[rows.eps == eps]
    assert len(rows) == 1
    return float(rows.value.iloc[0])


STRONG = {
    "attacks": "autoattack,pgd:steps=50:restarts=5,pgd:steps=10:restarts=1",
    "eps": EPS,
    "limit": 100,
    "seed": 0,
}


@pytest.fixture(scope="module")
def strong(at_model: nn.Module) -> pd.DataFrame:
    """AutoAttack, PGD-50×5 and PGD-10 on 100 test points (shared: AutoAttack is the cost)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return evaluate(at_model, load_dataset("digits"), **STRONG)  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(threads)


def test_autoattack_is_at_least_as_strong_as_pgd(at_model: nn.Module, strong: pd.DataFrame) -> None:
    data = load_dataset("digits")
    table = strong
    clean = accuracy(table, "clean")
    auto = accuracy(table, "autoattack")
    pgd50 = accuracy(table, "pgd:steps=50:restarts=5")
    pgd10 = accuracy(table, "pgd:steps=10:restarts=1")
    assert auto <= pgd50 <= pgd10 < clean
    assert pgd10 > 0.3  # the model is partly robust, so the comparison means something
    stages = [
        accuracy(table, "autoattack", f"accuracy_after_{s}")
        for s in ("apgd-ce", "apgd-t", "fab-t", "square")
    ]
    assert stages == sorted(stages, reverse=True) and stages[-1] == auto and stages[0] <= clean
    assert set(table[table.metric == "points"].value) == {100.0}
    # the masking checks on the same points: PGD-10 is the pgd:steps=10 attack's number, and
    # Square's gain is what it removed after the white-box stages
    assert accuracy(table, "masking-checks", "pgd10_accuracy") == pgd10
    assert accuracy(table, "masking-checks", "square_gain") == pytest.approx(stages[2] - auto)

    # APGD-CE stage, independently: torchattacks' APGD (100 steps) on the clean-correct points
    import torchattacks

    x = data.test.images[:100].float() / 255
    y = data.test.labels[:100]
    with torch.no_grad():
        correct = at_model(x).argmax(1) == y
    apgd = torchattacks.APGD(at_model, norm="Linf", eps=EPS, steps=100, n_restarts=1, seed=0)
    adv = apgd(x[correct], y[correct])
    with torch.no_grad():
        survived = (at_model(adv).argmax(1) == y[correct]).sum().item()
    assert stages[0] == pytest.approx(survived / 100)


def test_autoattack_stages_use_the_standard_settings(at_model: nn.Module) -> None:
    import torchattacks

    stages = dict(robust_accuracy._autoattack_stages(torchattacks, at_model, "l2", 0.5, 10, 3))
    assert list(stages) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    apgd, apgd_t, fab, square = stages.values()
    assert (apgd.steps, apgd.n_restarts, apgd.loss, apgd.thr_decr) == (100, 1, "ce", 0.75)
    assert (apgd_t.steps, apgd_t.n_restarts, apgd_t.n_target_classes) == (100, 1, 9)
    assert (fab.steps, fab.n_restarts, fab.multi_targeted, fab.n_target_classes) == (
        100,
        1,
        True,
        9,
    )
    assert (square.n_queries, square.p_init, square.rescale_schedule) == (5000, 0.8, False)
    assert {s.norm for s in stages.values()} == {"L2"}
    assert {s.eps for s in stages.values()} == {0.5}
    assert {s.seed for s in stages.values()} == {3}
    few = dict(robust_accuracy._autoattack_stages(torchattacks, at_model, "linf", 0.1, 4, 0))
    assert few["apgd-t"].n_target_classes == few["fab-t"].n_target_classes == 3


def test_pgd_matches_a_direct_computation_and_restarts_only_help(at_model: nn.Module) -> None:
    data = load_dataset("digits")
    table = evaluate(
        at_model, data, attacks="pgd:steps=7,pgd:steps=7:restarts=4", eps=EPS, step=0.3, seed=5
    )
    # independent: one PGD run with the same generator over every clean-correct point
    x = data.test.images.float() / 255
    y = data.test.labels
    with torch.no_grad():
        correct = at_model(x).argmax(1) == y
    generator = torch.Generator().manual_seed(5)
    adv = pgd(
        at_model, x[correct], y[correct], eps=EPS, alpha=0.3 * EPS, steps=7, generator=generator
    )
    with torch.no_grad():
        robust = (at_model(adv).argmax(1) == y[correct]).sum().item()
    one = accuracy(table, "pgd:steps=7:restarts=1")
    assert one == pytest.approx(robust / len(y))
    assert accuracy(table, "clean") == pytest.approx(correct.float().mean().item())
    assert accuracy(table, "pgd:steps=7:restarts=4") <= one


def test_accuracy_falls_to_zero_as_eps_grows(at_model: nn.Module) -> None:
    radii = [0.02, 0.1, 0.3, 0.6]
    table = evaluate(at_model, load_dataset("digits"), attacks="pgd:steps=20", eps=radii, limit=100)
    values = [accuracy(table, "pgd:steps=20:restarts=1", eps=e) for e in radii]
    assert values == sorted(values, reverse=True) and values[0] > 0.5 and values[-1] == 0.0
    stages: list[tuple[str, float]] = []  # progress: each stage as it ends
    auto = evaluate(
        at_model, load_dataset("digits"), attacks="autoattack", eps=0.6, limit=50,
        on_stage=lambda stage, value: stages.append((stage, value)),
    )  # fmt: skip
    assert accuracy(auto, "autoattack", eps=0.6) == 0.0
    after = auto.set_index("metric").value
    assert stages == [(s, after[f"accuracy_after_{s}"]) for s in robust_accuracy.AUTOATTACK_STAGES]
    l2 = evaluate(
        at_model, load_dataset("digits"), attacks="pgd:steps=20", norm="l2", eps=[0.3, 8.0],
        limit=100,
    )  # fmt: skip
    assert accuracy(l2, "pgd:steps=20:restarts=1", eps=0.3) > 0.5
    assert accuracy(l2, "pgd:steps=20:restarts=1", eps=8.0) == 0.0  # ‖[0,1]^64‖ = 8


def test_seeds_reproduce_and_the_caller_rng_is_untouched(
    at_model: nn.Module, strong: pd.DataFrame
) -> None:
    state = torch.get_rng_state()
    again = evaluate(at_model, load_dataset("digits"), **STRONG)  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), state)
    pd.testing.assert_frame_equal(again, strong)


def test_any_model_any_data_and_its_mode_is_restored() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    )  # fmt: skip
    model.train()
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm2d)
    mean = bn.running_mean.clone()
    x = torch.rand(12, 1, 8, 8)
    y = torch.randint(0, 3, (12,))
    table = evaluate(model, (x, y), attacks="pgd:steps=3:restarts=2", eps=8 / 255, batch_size=5)
    assert model.training and torch.equal(bn.running_mean, mean)  # evaluated in eval mode
    assert list(table.columns) == ["epoch", "split", "attack", "norm", "eps", "metric", "value"]
    assert set(table.split) == {"test"}
    assert set(table.attack) == {"clean", "pgd:steps=3:restarts=2", "masking-checks"}  # default
    with torch.no_grad():
        expected = (model.eval()(x).argmax(1) == y).float().mean().item()
    assert accuracy(table, "clean") == pytest.approx(expected)


def test_attack_specs() -> None:
    assert parse_attack("autoattack") == AutoAttackSpec()
    assert parse_attack("pgd") == PGDSpec(10, 1)
    assert parse_attack("PGD:restarts=5:steps=50").name == "pgd:steps=50:restarts=5"
    assert parse_attack("pgd:step=1/8").name == "pgd:steps=10:restarts=1:step=0.125"
    for bad, message in (
        ("fgsm", "unknown attack 'fgsm'"),
        ("pgd:steps=0", "steps must be an integer >= 1, got '0'"),
        ("pgd:steps=x", "steps must be an integer >= 1, got 'x'"),
        ("pgd:iters=3", "bad option 'iters=3'"),
        ("pgd:steps=2:steps=3", "bad option 'steps=3'"),
        ("pgd:step=0", "step must be a fraction of eps > 0"),
        ("pgd:restarts", "bad option 'restarts'"),
    ):
        with pytest.raises(UsageError, match=re.escape(message)):
            parse_attack(bad)
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    for kwargs, message in (
        ({"eps": 2.0}, "eps=2 is larger than the whole [0,1] pixel range"),
        ({"eps": -0.1}, "eps must be finite and >= 0, got -0.1"),
        ({"eps": "x/255"}, "eps: expected a number or k/255, got 'x/255'"),
        ({"eps": 0}, "eps must be > 0, got 0"),
        ({"attacks": "pgd,pgd:steps=10"}, "attack pgd:steps=10:restarts=1 given twice"),
        ({"attacks": ""}, "no attack given"),
        ({"norm": "l1"}, "unknown norm 'l1'"),
        ({"limit": 0}, "limit must be >= 1"),
    ):
        with pytest.raises(UsageError, match=re.escape(message)):
            evaluate(model, (x, y), **({"attacks": "pgd", "eps": 0.1} | kwargs))
    with pytest.raises(UsageError, match="pixels in"):
        evaluate(model, (x * 3, y), attacks="pgd", eps=0.1)
    with pytest.raises(UsageError, match=r"labels must lie in \[0, 2\)"):
        evaluate(model, (x, y + 2), attacks="pgd", eps=0.1)


def test_missing_torchattacks_gives_the_install_hint(
    at_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # import torchattacks -> ImportError
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(UsageError, match=r"pip install 'ncrobust\[eval\]'"):
        evaluate(model, (x, y), attacks="autoattack", eps=0.1)
    assert main(["eval", str(at_run), "--attacks", "autoattack"]) == 2
    assert "pip install 'ncrobust[eval]'" in capsys.readouterr().err
    assert not RunDirectory(at_run).robustness_path.exists()
    table = evaluate(model, (x, y), attacks="pgd", eps=0.1)  # ncrobust's own PGD needs nothing
    assert "pgd:steps=10:restarts=1" in set(table.attack)


def test_table_round_trips(tmp_path: Path, at_model: nn.Module) -> None:
    table = evaluate(
        at_model, load_dataset("digits"), attacks="pgd:steps=3", eps=[0.1, 0.2], limit=20, epoch=4
    )
    run = RunDirectory(tmp_path)
    upsert(run.robustness_path, robustness_frame(table), ROBUSTNESS_COLUMNS)
    pd.testing.assert_frame_equal(run.read_robustness(), table)


def test_cli_refuses_bad_input(
    at_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        ([str(tmp_path / "absent")], "no such directory"),
        ([str(at_run), "--attacks", "cw"], "unknown attack 'cw'"),
        ([str(at_run), "--attacks", "pgd:steps=-1"], "steps must be an integer >= 1"),
        ([str(at_run), "--eps", "8"], "larger than the whole [0,1] pixel range"),
        ([str(at_run), "--eps=-1/255"], "eps must be finite and >= 0"),
        ([str(at_run), "--eps", "abc"], "expected a number or k/255"),
        ([str(at_run), "--epochs", "5"], "no kept checkpoint for epoch(s) [5]"),
        ([str(at_run), "--splits", "val"], "unknown split"),
        ([str(at_run), "--limit", "0"], "--limit must be >= 1"),
    ]
    for argv, message in cases:
        assert main(["eval", *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not RunDirectory(at_run).robustness_path.exists()


def test_cli_runs_the_transfer_check_from_a_kept_checkpoint(
    at_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = RunDirectory(at_run).robustness_path
    argv = ["eval", str(at_run), "--attacks", "pgd:steps=2", "--limit", "20"]
    try:
        assert main([*argv, "--transfer-from", "7"]) == 2
        assert "no kept checkpoint for epoch(s) [7]" in capsys.readouterr().err
        assert main([*argv, "--transfer-from", "3", "--no-checks"]) == 2
        assert "drop --no-checks" in capsys.readouterr().err
        assert not path.exists()
        assert main([*argv, "--transfer-from", "3"]) == 0
        table = pd.read_parquet(path)
        gain = table[(table.attack == "masking-checks") & (table.metric == "transfer_gain")]
        assert len(gain) == 1 and 0 <= gain.value.iloc[0] <= 1
    finally:
        path.unlink(missing_ok=True)


def test_cli_writes_rerun_replaces_and_a_failure_keeps_what_was_written(
    at_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = RunDirectory(at_run).robustness_path
    argv = ["eval", str(at_run), "--attacks", "pgd:steps=3", "--epochs", "3,6", "--no-checks"]
    try:
        assert main([*argv, "--limit", "20"]) == 0
        printed = capsys.readouterr().out
        assert "pgd:steps=3:restarts=1" in printed and "accuracy" in printed
        first = pd.read_parquet(path)
        assert sorted(set(first.epoch)) == [3, 6] and set(first.eps) == {0.0, EPS}
        assert set(first[first.metric == "points"].value) == {20.0}
        assert main([*argv, "--limit", "30"]) == 0  # same keys: replaced
        second = pd.read_parquet(path)
        assert len(second) == len(first)
        assert set(second[second.metric == "points"].value) == {30.0}
        assert main([*argv, "--limit", "30", "--eps", "0.05"]) == 0  # a new eps: added
        third = pd.read_parquet(path)
        assert len(third) == len(first) + 2 * 2  # accuracy and points at 2 epochs

        calls = []

        def fail_second(*args: object, **kwargs: object) -> torch.Tensor:
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return original(*args, **kwargs)

        original = robust_accuracy._pgd_robust
        monkeypatch.setattr(robust_accuracy, "_pgd_robust", fail_second)
        assert main([*argv, "--eps", "0.25"]) == 130
        kept = pd.read_parquet(path)
        # the first checkpoint's attack was written before the interruption
        assert set(kept[kept.eps == 0.25].epoch) == {3}
        assert len(kept) == len(third) + 2
    finally:
        path.unlink(missing_ok=True)
