"""The tidy tables of a run directory: their columns, dtypes and one way to update them.

``metrics.parquet`` / ``measurements.parquet``: one row per value
(``epoch, split, view, layer, metric, value``); ``attack_stats.parquet`` /
``measurement_stats.parquet``: the paper's Figure 7 statistics per class
(``epoch, split, view, layer, class, statistic, value``); ``eps_study.parquet``: measurement
rows with an ``eps`` column first; ``robustness.parquet``: robust accuracy under strong attacks
(``epoch, split, attack, norm, eps, metric, value``). Every table is replaced atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ncrobust.atomic import atomic_write_parquet
from ncrobust.errors import UsageError

METRIC_COLUMNS = ("epoch", "split", "view", "layer", "metric", "value")
STATS_COLUMNS = ("epoch", "split", "view", "layer", "class", "statistic", "value")

ROBUSTNESS_COLUMNS = ("epoch", "split", "attack", "norm", "eps", "metric", "value")
ROBUSTNESS_KEY = [c for c in ROBUSTNESS_COLUMNS if c != "value"]  # a row's identity
CLEAN = "clean"  # the attack name of clean accuracy rows
ACCURACY = "accuracy"
POINTS = "points"  # how many points were evaluated (a --limit makes it a subset)
AUTOATTACK = "autoattack"


def empty_metrics() -> pd.DataFrame:
    """An empty metrics table with the right columns and dtypes."""
    return typed(pd.DataFrame(columns=list(METRIC_COLUMNS)), METRIC_COLUMNS)


def empty_stats() -> pd.DataFrame:
    """An empty attack-statistics table with the right columns and dtypes."""
    return typed(pd.DataFrame(columns=list(STATS_COLUMNS)), STATS_COLUMNS)


def typed(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """``frame`` reduced to ``columns`` (metrics or stats) with the tables' dtypes."""
    frame = frame.loc[:, list(columns)].copy()
    frame["epoch"] = frame["epoch"].astype("int64")
    if "class" in frame:
        frame["class"] = frame["class"].astype("int64")
    for name in ("split", "view", "layer", "metric", "statistic"):
        if name in frame:
            frame[name] = frame[name].astype("string")
    frame["value"] = frame["value"].astype("float64")
    return frame


def metric_rows(
    epoch: int, split: str, view: str, layer: str, values: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Tidy rows for one ``{metric: value}`` mapping."""
    return [
        {"epoch": epoch, "split": split, "view": view, "layer": layer, "metric": k, "value": v}
        for k, v in values.items()
    ]


def merged(old: pd.DataFrame, new: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``old`` and ``new`` rows as one table of ``columns``; ``new`` wins on the same key (every
    column but ``value``)."""
    keys = [c for c in columns if c != "value"]
    both = pd.concat([old, new]).drop_duplicates(keys, keep="last")
    return both.loc[:, list(columns)].reset_index(drop=True)


def joined(frame: pd.DataFrame, extra: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """``frame`` with the rows of the table ``extra`` (if present) winning on the same key."""
    if not extra.exists():
        return frame
    return merged(frame, typed(pd.read_parquet(extra), columns), columns)


def robustness_frame(rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Rows as a robustness table with the canonical columns and dtypes."""
    frame = pd.DataFrame(rows, columns=list(ROBUSTNESS_COLUMNS))
    missing = [c for c in ROBUSTNESS_COLUMNS if c not in frame.columns]
    if missing:
        raise UsageError(f"robustness table misses column(s) {', '.join(missing)}")
    return frame.loc[:, list(ROBUSTNESS_COLUMNS)].astype(
        {
            "epoch": "int64",
            "split": "string",
            "attack": "string",
            "norm": "string",
            "eps": "float64",
            "metric": "string",
            "value": "float64",
        }
    )


def read_robustness_table(path: Path) -> pd.DataFrame:
    """The robustness table at ``path`` (empty, with the right columns, when absent)."""
    if not path.exists():
        return robustness_frame([])
    return robustness_frame(pd.read_parquet(path))


def upsert(path: Path, new: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Write ``new`` over the rows of the table at ``path`` with the same key, atomically.

    The key is every column of ``columns`` but ``value``; rows of ``path`` with other keys are
    kept. Returns the table written.
    """
    old = pd.read_parquet(path) if path.exists() else new.iloc[:0]
    frame = merged(old, new, columns)
    atomic_write_parquet(frame, path)
    return frame
