"""Group runs that differ only in their seed, and aggregate their tables: mean ± std over seeds.

The standard deviation uses ``ddof=1`` (the sample standard deviation, as the paper's 3-seed
bands). A group with a single seed has ``std = NaN`` (undefined, not 0): figures draw no band
for it and the report says "1 seed". ``n`` counts the seeds with a finite value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ncrobust.config import TrainConfig
from ncrobust.study.loading import Run

# Fields that do not change what a run computes: runs differing only here are seeds of one group.
NOT_GROUPED = frozenset(
    {"seed", "out", "device", "data_dir", "checkpoint_every", "tensorboard", "feature_cache_mb"}
)
# Fields named in a group's label when they vary between groups, in this order.
LABEL_FIELDS = (
    "dataset",
    "model",
    "norm",
    "eps",
    "trades_beta",
    "trades_bn_eval",
    "epochs",
    "lr",
    "steps",
    "augment",
    "weight_decay",
    "batch_size",
)
MODE_NAMES = {"st": "ST", "at": "AT", "trades": "TRADES"}
MODE_ORDER = tuple(MODE_NAMES)  # the one order of groups in every table and list

METRIC_KEY = ["epoch", "split", "view", "layer", "metric"]
STATS_KEY = ["epoch", "split", "view", "layer", "class", "statistic"]
EPS_KEY = ["epoch", "eps", "split", "view", "layer", "metric"]


@dataclass(frozen=True)
class RunGroup:
    """Runs that differ only in seed: one curve with a band in every figure."""

    label: str
    runs: tuple[Run, ...]

    @property
    def config(self) -> TrainConfig:
        """The first seed's config (every field but the ungrouped ones is shared)."""
        return self.runs[0].config

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def seeds(self) -> list[int]:
        return sorted(run.config.seed for run in self.runs)


# TRADES settings: they change nothing in an ST or AT run
TRADES_ONLY = frozenset({"trades_beta", "trades_bn_eval"})


def mode_rank(mode: str) -> int:
    """A mode's place in :data:`MODE_ORDER` (unknown modes last)."""
    return MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER)


def in_mode_order(groups: Sequence[RunGroup]) -> list[RunGroup]:
    """``groups`` ST, then AT, then TRADES, each mode in its given order."""
    return sorted(groups, key=lambda g: mode_rank(g.mode))


def grouping_key(config: TrainConfig) -> tuple[tuple[str, Any], ...]:
    """The hashable settings shared by all seeds of one group (TRADES settings only for
    TRADES runs)."""
    items = []
    for name, value in config.to_dict().items():
        if name in NOT_GROUPED or (config.mode != "trades" and name in TRADES_ONLY):
            continue
        items.append((name, tuple(value) if isinstance(value, list) else value))
    return tuple(items)


def format_eps(value: float) -> str:
    """``8/255`` for multiples of 1/255 (the paper's notation), else the plain number.

    Radii read back from a view label keep 6 significant digits, hence the relative tolerance.
    """
    scaled = value * 255
    if scaled > 0 and math.isclose(scaled, round(scaled), rel_tol=2e-6, abs_tol=1e-6):
        return f"{round(scaled)}/255"
    return f"{value:g}"


def _format(name: str, value: Any) -> str:
    if name in ("eps", "alpha"):
        return f"{name}={format_eps(float(value))}"
    if isinstance(value, tuple | list):
        return f"{name}={','.join(map(str, value))}"
    return f"{name}={value}" if name not in ("dataset", "model") else str(value)


def group_runs(runs: Sequence[Run]) -> list[RunGroup]:
    """Group ``runs`` by everything but seed and output/device settings, in first-seen order.

    Labels read ``MODE · field=value ...`` naming only the fields that vary between groups;
    two runs of one group with the same seed are refused (they would be counted twice).
    """
    from ncrobust.errors import UsageError

    buckets: dict[tuple[tuple[str, Any], ...], list[Run]] = {}
    for run in runs:
        buckets.setdefault(grouping_key(run.config), []).append(run)
    for members in buckets.values():
        seeds = [r.config.seed for r in members]
        duplicated = sorted({s for s in seeds if seeds.count(s) > 1})
        if duplicated:
            paths = ", ".join(str(r.path) for r in members if r.config.seed in duplicated)
            raise UsageError(
                f"runs {paths} have identical settings and seed {duplicated[0]}; "
                "pass only one of them"
            )
    keys = list(buckets)
    configs = [dict(key) for key in keys]
    names = list(dict.fromkeys(name for c in configs for name in c))
    varying = [  # among the groups that have the setting (TRADES settings: TRADES groups)
        name
        for name in names
        if name != "mode" and len({repr(c[name]) for c in configs if name in c}) > 1
    ]
    named = [f for f in LABEL_FIELDS if f in varying]
    others = [f for f in varying if f not in LABEL_FIELDS]
    labels = [_label(c, named) for c in configs]
    for extra in others:  # measurement settings, only when needed to tell groups apart
        if len(set(labels)) == len(labels):
            break
        named.append(extra)
        labels = [_label(c, named) for c in configs]
    if len(set(labels)) != len(labels):  # pragma: no cover - keys differ, so labels do too
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return [
        RunGroup(label, tuple(sorted(buckets[key], key=lambda r: r.config.seed)))
        for label, key in zip(labels, keys, strict=True)
    ]


FROZEN_BN = "frozen BN, as released"


def _label(config: dict[str, Any], fields: Sequence[str]) -> str:
    mode = str(config["mode"])
    parts = [MODE_NAMES.get(mode, mode.upper())]
    for name in fields:
        if name not in config:  # a TRADES setting of an ST or AT group
            continue
        if name == "trades_bn_eval":  # the TRADES variant: named when BN is frozen
            if config[name]:
                parts.append(FROZEN_BN)
            continue
        parts.append(_format(name, config[name]))
    return " · ".join(parts)


def _aggregate(
    groups: Sequence[RunGroup], table: str, key: list[str], value: str = "value"
) -> pd.DataFrame:
    """Mean, std (ddof=1) and count of finite values over the seeds of each group."""
    frames = []
    for group in groups:
        for index, run in enumerate(group.runs):
            frame: pd.DataFrame = getattr(run, table)
            if frame.empty:
                continue
            # a re-measured row (resumed run) counts once: its latest value
            frame = frame.drop_duplicates(subset=key, keep="last")
            frames.append(frame.assign(group=group.label, run=index))
    columns = ["group", *key, "mean", "std", "n"]
    if not frames:
        return pd.DataFrame(columns=columns)
    tidy = pd.concat(frames, ignore_index=True)
    out = (
        tidy.groupby(["group", *key], sort=False, dropna=False)[value]
        .agg(mean="mean", std="std", n="count")
        .reset_index()
    )
    out["n"] = out["n"].astype("int64")
    return out.loc[:, columns]


def aggregate_metrics(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """Metrics over seeds: ``group, epoch, split, view, layer, metric, mean, std, n``.

    One row per key; ``std`` is NaN for one seed, ``n`` the number of seeds with a value.
    """
    return _aggregate(groups, "metrics", METRIC_KEY)


def aggregate_stats(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """Figure 7 statistics: ``group, epoch, split, view, layer, class, statistic, mean, std, n``."""
    return _aggregate(groups, "stats", STATS_KEY)


def aggregate_eps_study(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """Small-eps study: ``group, epoch, eps, split, view, layer, metric, mean, std, n``."""
    return _aggregate(groups, "eps_study", EPS_KEY)
