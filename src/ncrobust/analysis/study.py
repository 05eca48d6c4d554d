"""A loaded set of runs, grouped over seeds, with the lookups that figures and findings share.

``Study.from_paths(paths)`` reads every run, groups seeds and aggregates the three tables once;
figures and findings then ask it for a series (one curve), a value (one number) or the layer
order of a group, never touching raw tables themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ncrobust.analysis.aggregate import (
    RunGroup,
    aggregate_eps_study,
    aggregate_metrics,
    aggregate_stats,
    group_runs,
)
from ncrobust.analysis.loading import Run, load_runs
from ncrobust.errors import UsageError
from ncrobust.runs import FIT_VIEW, OUTPUT_LAYER

PENULTIMATE = "penultimate"
# classes of the bundled datasets, for when no attack statistics tell
DATASET_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "imagenette": 10}


@dataclass
class Study:
    """Runs grouped over seeds with their aggregated metrics, attack statistics and eps study."""

    groups: list[RunGroup]
    metrics: pd.DataFrame
    stats: pd.DataFrame
    eps_study: pd.DataFrame
    _by_group: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    _orders: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_runs(cls, runs: Sequence[Run]) -> Study:
        groups = group_runs(runs)
        study = cls(
            groups=groups,
            metrics=aggregate_metrics(groups),
            stats=aggregate_stats(groups),
            eps_study=aggregate_eps_study(groups),
        )
        # one frame per group: every lookup filters a group's rows, not the whole study's
        study._by_group = {
            str(label): frame for label, frame in study.metrics.groupby("group", sort=False)
        }
        return study

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path]) -> Study:
        """Load the runs under ``paths`` (run directories or folders of runs)."""
        return cls.from_runs(load_runs(paths))

    # -- groups ---------------------------------------------------------------------------

    def group(self, label: str) -> RunGroup:
        for group in self.groups:
            if group.label == label:
                return group
        raise UsageError(f"no run group {label!r} (have: {', '.join(self.labels())})")

    def labels(self) -> list[str]:
        return [g.label for g in self.groups]

    def groups_of(self, modes: Sequence[str]) -> list[RunGroup]:
        """The groups trained with one of ``modes``, in load order."""
        return [g for g in self.groups if g.mode in modes]

    def rows(self, label: str) -> pd.DataFrame:
        """The aggregated metric rows of one group (empty if it has none)."""
        empty = self.metrics.iloc[0:0]
        return self._by_group.get(label, empty)

    # -- lookups --------------------------------------------------------------------------

    def series(self, label: str, split: str, view: str, layer: str, metric: str) -> pd.DataFrame:
        """One curve: columns ``epoch, mean, std, n`` sorted by epoch, finite means only."""
        rows = self.rows(label)
        mask = (
            (rows["split"] == split)
            & (rows["view"] == view)
            & (rows["layer"] == layer)
            & (rows["metric"] == metric)
        )
        out = rows.loc[mask, ["epoch", "mean", "std", "n"]]
        out = out[np.isfinite(out["mean"].to_numpy(dtype=float))]
        return out.sort_values("epoch").reset_index(drop=True)

    def value(
        self,
        label: str,
        split: str,
        view: str,
        layer: str,
        metric: str,
        epoch: int | None = None,
    ) -> float:
        """The seed mean at ``epoch`` (default: :meth:`final_epoch`); NaN if not measured."""
        curve = self.series(label, split, view, layer, metric)
        if epoch is None:
            epoch = self._final(label, curve)
        curve = curve[curve["epoch"] == epoch]
        return float(curve["mean"].iloc[-1]) if len(curve) else math.nan

    def final_epoch(self, label: str, split: str, view: str, layer: str, metric: str) -> int | None:
        """The last epoch at which every seed of the group has this value.

        Seeds still training do not pull the comparison to an epoch only the fastest seed
        reached; when no epoch has all seeds, the last epoch with any value is used.
        """
        return self._final(label, self.series(label, split, view, layer, metric))

    def _final(self, label: str, curve: pd.DataFrame) -> int | None:
        if curve.empty:
            return None
        complete = curve[curve["n"] >= len(self.group(label).runs)]
        return int((complete if len(complete) else curve)["epoch"].iloc[-1])

    def has(self, label: str, split: str, view: str, layer: str | None = None) -> bool:
        """Whether the group measured ``view`` on ``split`` (at ``layer`` when given)."""
        rows = self.rows(label)
        mask = (rows["split"] == split) & (rows["view"] == view)
        if layer is not None:
            mask &= rows["layer"] == layer
        return bool(mask.any())

    def last_epoch(self, label: str) -> int | None:
        """The last measured epoch of a group (probe rows, not per-epoch training rows)."""
        rows = self.rows(label)
        probes = rows[rows["view"] != FIT_VIEW]
        return int(probes["epoch"].max()) if len(probes) else None

    def layer_order(self, label: str) -> list[str]:
        """Measured feature layers in depth order.

        The order of first appearance inside the measurement with the most layers (the
        layerwise one writes every tap in depth order), then any other layer as first seen.
        """
        if label not in self._orders:
            self._orders[label] = self._layer_order(label)
        return list(self._orders[label])

    def _layer_order(self, label: str) -> list[str]:
        for run in self.group(label).runs:
            rows = run.metrics[run.metrics["layer"] != OUTPUT_LAYER]
            if rows.empty:
                continue
            counts = rows.groupby(["epoch", "split", "view"], sort=False)["layer"].nunique()
            epoch, split, view = counts.idxmax()
            block = rows[
                (rows["epoch"] == epoch) & (rows["split"] == split) & (rows["view"] == view)
            ]
            order = list(dict.fromkeys(block["layer"].tolist()))
            return order + [x for x in dict.fromkeys(rows["layer"].tolist()) if x not in order]
        return []

    def layer_curve(
        self, label: str, epoch: int, split: str, view: str, metric: str
    ) -> pd.DataFrame:
        """One metric along the layers at ``epoch``: columns ``depth, layer, mean, std``,
        depth from 1 in :meth:`layer_order`, finite means only, sorted by depth."""
        order = self.layer_order(label)
        rows = self.rows(label)
        rows = rows[
            (rows["epoch"] == epoch)
            & (rows["split"] == split)
            & (rows["view"] == view)
            & (rows["metric"] == metric)
            & rows["layer"].isin(order)
        ]
        depth = {name: i + 1 for i, name in enumerate(order)}
        out = rows.assign(depth=rows["layer"].map(depth).astype("int64"))
        out = out[np.isfinite(out["mean"].to_numpy(dtype=float))]
        columns = ["depth", "layer", "mean", "std"]
        return out.sort_values("depth").loc[:, columns].reset_index(drop=True)

    def layerwise_epoch(self, label: str) -> int | None:
        """The last measured epoch at which more than one feature layer was measured."""
        rows = self.rows(label)
        rows = rows[(rows["layer"] != OUTPUT_LAYER) & (rows["view"] != FIT_VIEW)]
        if rows.empty:
            return None
        per_epoch = rows.groupby("epoch").agg(layers=("layer", "nunique"), seeds=("n", "max"))
        many = per_epoch[per_epoch["layers"] > 1]
        if many.empty:
            return None
        complete = many[many["seeds"] >= len(self.group(label).runs)]
        return int((complete if len(complete) else many).index.max())

    def perturbed_view(self, label: str, split: str) -> str | None:
        """The paper's "perturbed" view: ``train_adv`` for AT/TRADES when measured, else ``pgd``."""
        mode = self.group(label).mode
        order = ("train_adv", "pgd") if mode in ("at", "trades") else ("pgd", "train_adv")
        for view in order:
            if self.has(label, split, view):
                return view
        return None

    def num_classes(self, label: str) -> int | None:
        """C from the attack statistics' classes, else from the dataset name; None if unknown."""
        stats = self.stats[self.stats["group"] == label]
        if len(stats):
            return int(stats["class"].max()) + 1
        return DATASET_CLASSES.get(self.group(label).config.dataset)


def simplex_angle(num_classes: int) -> float:
    """The angle between two vertices of a centred simplex ETF, arccos(-1/(C-1)), in radians."""
    if num_classes < 2:
        raise ValueError(f"a simplex needs at least 2 classes, got {num_classes}")
    return math.acos(-1.0 / (num_classes - 1))
