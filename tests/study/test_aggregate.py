"""Seed grouping and mean ± std aggregation on hand-made tables with known answers."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from ncrobust.analysis import Study, aggregate_metrics, group_runs, load_runs
from ncrobust.errors import UsageError


def _row(epoch: int, value: float, metric: str = "nc1", view: str = "clean") -> dict:
    return {
        "epoch": epoch,
        "split": "train",
        "view": view,
        "layer": "penultimate",
        "metric": metric,
        "value": value,
    }


def test_mean_and_sample_std_over_seeds(fake: ModuleType, tmp_path: Path) -> None:
    values = {1: (1.0, 10.0), 2: (2.0, math.nan), 3: (4.0, 30.0)}
    for seed, (a, b) in values.items():
        fake.write_run(
            tmp_path / f"s{seed}", "st", seed, metrics=[_row(5, a), _row(5, b, "nc4")], stats=[]
        )
    fake.write_run(tmp_path / "single", "at", 1, metrics=[_row(5, 7.0)], stats=[])
    groups = group_runs(load_runs([tmp_path]))
    table = aggregate_metrics(groups).set_index(["group", "metric"])

    st = table.loc[("ST", "nc1")]
    assert st["mean"] == pytest.approx(7 / 3)
    assert st["std"] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    assert st["n"] == 3
    # a NaN value (e.g. a class never predicted) is left out, not counted as a seed
    nc4 = table.loc[("ST", "nc4")]
    assert (nc4["mean"], nc4["n"]) == (pytest.approx(20.0), 2)
    assert nc4["std"] == pytest.approx(np.std([10.0, 30.0], ddof=1))
    # one seed: the sample std is undefined, reported as NaN (figures draw no band)
    single = table.loc[("AT", "nc1")]
    assert single["mean"] == 7.0 and single["n"] == 1 and math.isnan(single["std"])


def test_groups_ignore_seed_out_and_device_but_not_settings(
    fake: ModuleType, tmp_path: Path
) -> None:
    rows = [_row(1, 1.0)]
    fake.write_run(tmp_path / "a", "st", 1, metrics=rows, device="cpu")
    fake.write_run(tmp_path / "b", "st", 2, metrics=rows, device="cuda", data_dir="/data")
    fake.write_run(tmp_path / "c", "at", 1, metrics=rows, eps=8 / 255)
    fake.write_run(tmp_path / "d", "at", 1, metrics=rows, eps=4 / 255)
    groups = group_runs(load_runs([tmp_path]))
    labels = {g.label: g.seeds for g in groups}
    assert labels == {"ST · eps=8/255": [1, 2], "AT · eps=8/255": [1], "AT · eps=4/255": [1]}


def test_same_settings_and_seed_twice_is_refused(fake: ModuleType, tmp_path: Path) -> None:
    fake.write_run(tmp_path / "a", "st", 1, metrics=[_row(1, 1.0)])
    fake.write_run(tmp_path / "copy", "st", 1, metrics=[_row(1, 1.0)])
    with pytest.raises(UsageError, match="identical settings and seed 1"):
        group_runs(load_runs([tmp_path]))


def test_remeasured_rows_count_once(fake: ModuleType, tmp_path: Path) -> None:
    # a resumed run may hold an epoch's rows twice: the latest value wins, n stays 1
    fake.write_run(tmp_path / "a", "st", 1, metrics=[_row(5, 1.0), _row(5, 3.0)], stats=[])
    study = Study.from_paths([tmp_path])
    assert study.value("ST", "train", "clean", "penultimate", "nc1") == 3.0
    assert study.series("ST", "train", "clean", "penultimate", "nc1")["n"].tolist() == [1]


def test_attack_statistics_per_class(paper_study: Study, fake: ModuleType) -> None:
    stats = paper_study.stats
    rows = stats[
        (stats["group"] == "ST")
        & (stats["view"] == "pgd")
        & (stats["split"] == "train")
        & (stats["epoch"] == fake.LAST)
        & (stats["statistic"] == "clean_mean_norm")
        & (stats["layer"] == "penultimate")
    ]
    rows = rows.sort_values("class")
    assert rows["mean"].tolist() == pytest.approx([5.0, 6.0, 7.0, 8.0])
    assert rows["std"].tolist() == pytest.approx([0.5, 0.6, 0.7, 0.8])  # 0.1 × base
    assert rows["n"].tolist() == [3, 3, 3, 3]


def test_paper_runs_seed_means_equal_base_values(paper_study: Study, fake: ModuleType) -> None:
    assert paper_study.labels() == ["AT", "ST", "TRADES"]  # sorted directory order
    curve = paper_study.series("ST", "train", "pgd", "penultimate", "nc1")
    assert curve["epoch"].tolist() == list(fake.EPOCHS)
    expected = [5.0 * fake.profile(e, False) for e in fake.EPOCHS]
    assert curve["mean"].tolist() == pytest.approx(expected)
    assert curve["std"].tolist() == pytest.approx([0.1 * v for v in expected])


def test_findings_compare_at_the_last_epoch_all_seeds_reached(
    fake: ModuleType, tmp_path: Path
) -> None:
    fake.write_run(tmp_path / "a", "st", 1, metrics=[_row(5, 1.0), _row(10, 7.0)], stats=[])
    fake.write_run(tmp_path / "b", "st", 2, metrics=[_row(5, 3.0)], stats=[])  # still training
    study = Study.from_paths([tmp_path])
    assert study.final_epoch("ST", "train", "clean", "penultimate", "nc1") == 5
    assert study.value("ST", "train", "clean", "penultimate", "nc1") == 2.0  # mean of 1 and 3
    assert study.value("ST", "train", "clean", "penultimate", "nc1", epoch=10) == 7.0
    assert study.series("ST", "train", "clean", "penultimate", "nc1")["n"].tolist() == [2, 1]


def test_trades_settings_group_and_label_only_trades_runs(fake: ModuleType) -> None:
    runs = [
        fake.memory_run("at", 1, trades_bn_eval=True),
        fake.memory_run("at", 2),  # the same AT setting: trades_bn_eval changes nothing in AT
        fake.memory_run("trades", 1, trades_bn_eval=True),
        fake.memory_run("trades", 1),
        fake.memory_run("st", 1, trades_beta=3.0),
    ]
    groups = group_runs(runs)
    assert [(g.label, g.seeds) for g in groups] == [
        ("AT", [1, 2]),
        ("TRADES · frozen BN, as released", [1]),
        ("TRADES", [1]),
        ("ST", [1]),
    ]
