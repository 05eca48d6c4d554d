"""One upsert for every table: new rows win on their key, other rows stay, columns canonical."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ncrobust.runs.tables import (
    METRIC_COLUMNS,
    ROBUSTNESS_COLUMNS,
    STATS_COLUMNS,
    robustness_frame,
    upsert,
)


def _metrics(epoch: int, value: float, metric: str = "nc1") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "value": value,
                "epoch": epoch,
                "split": "train",
                "view": "clean",
                "layer": "p",
                "metric": metric,
            }
        ]
    )


def test_upsert_replaces_rows_of_the_same_key_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    upsert(path, pd.concat([_metrics(0, 1.0), _metrics(5, 2.0)]), METRIC_COLUMNS)
    written = upsert(path, pd.concat([_metrics(5, 3.0), _metrics(5, 4.0, "nc4")]), METRIC_COLUMNS)
    table = pd.read_parquet(path)
    assert tuple(table.columns) == METRIC_COLUMNS  # canonical order, whatever the input's
    assert sorted(zip(table.epoch, table.metric, table.value, strict=True)) == [
        (0, "nc1", 1.0),
        (5, "nc1", 3.0),
        (5, "nc4", 4.0),
    ]
    pd.testing.assert_frame_equal(written, table)


def test_upsert_of_eps_study_and_stats_keys_include_their_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "eps.parquet"
    columns = ("eps", *METRIC_COLUMNS)
    upsert(path, _metrics(0, 1.0).assign(eps=0.1), columns)
    upsert(path, _metrics(0, 2.0).assign(eps=0.2), columns)  # another eps: a new row
    assert sorted(pd.read_parquet(path).value) == [1.0, 2.0]
    stats = tmp_path / "s.parquet"
    row = {"epoch": 0, "split": "train", "view": "pgd", "layer": "p", "statistic": "s", "value": 1}
    upsert(stats, pd.DataFrame([row | {"class": 0}, row | {"class": 1}]), STATS_COLUMNS)
    upsert(stats, pd.DataFrame([row | {"class": 1, "value": 7}]), STATS_COLUMNS)
    table = pd.read_parquet(stats)
    assert tuple(table.columns) == STATS_COLUMNS
    assert dict(zip(table["class"], table.value, strict=True)) == {0: 1, 1: 7}


def test_upsert_of_robustness_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    row = {
        "epoch": 3,
        "split": "test",
        "attack": "autoattack",
        "norm": "linf",
        "eps": 0.1,
        "metric": "accuracy",
        "value": 0.5,
    }
    upsert(path, robustness_frame([row]), ROBUSTNESS_COLUMNS)
    upsert(path, robustness_frame([row | {"value": 0.4}, row | {"eps": 0.2}]), ROBUSTNESS_COLUMNS)
    table = pd.read_parquet(path)
    assert sorted(zip(table.eps, table.value, strict=True)) == [(0.1, 0.4), (0.2, 0.5)]
