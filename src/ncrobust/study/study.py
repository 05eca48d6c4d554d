"""A loaded set of runs, grouped over seeds, with the lookups that figures and findings share.

``Study.from_paths(paths)`` reads every run, groups seeds and aggregates the three tables once;
figures and findings then ask it for a series (one curve), a value (one number) or the layer
order of a group, never touching raw tables themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ncrobust.errors import UsageError
from ncrobust.study.aggregate import (
    RunGroup,
    aggregate_eps_study,
    aggregate_metrics,
    aggregate_stats,
    group_runs,
)
from ncrobust.study.loading import Run, load_runs
from ncrobust.views import FIT_VIEW, OUTPUT_LAYER, views_of

# settings a user may select runs by (``--where dataset=cifar100,norm=l2``)
WHERE_KEYS = ("dataset", "model", "mode", "norm")
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
    _series: dict[tuple[str, ...], pd.DataFrame] = field(default_factory=dict, repr=False)

    @classmethod
    def from_runs(cls, runs: Sequence[Run]) -> Study:
        return cls.from_groups(group_runs(runs))

    @classmethod
    def from_groups(cls, groups: Sequence[RunGroup]) -> Study:
        """A study of already grouped runs (labels kept, e.g. one seed of each group)."""
        groups = list(groups)
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
    def from_paths(
        cls, paths: Iterable[str | Path], where: Mapping[str, Sequence[str]] | None = None
    ) -> Study:
        """Load the runs under ``paths`` (run directories or folders of runs), those matching
        ``where`` only (see :func:`parse_where`)."""
        runs = load_runs(paths)
        if where:
            runs = select_runs(runs, where)
        return cls.from_runs(runs)

    def select(self, where: Mapping[str, Sequence[str]]) -> Study:
        """A new study of the runs matching ``where`` (labels name what varies among them);
        raises :class:`MissingRuns` when none does."""
        runs = [run for group in self.groups for run in group.runs]
        return Study.from_runs(select_runs(runs, where))

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
        """One curve: columns ``epoch, mean, std, n`` sorted by epoch, finite means only
        (filtered once per study; each call gets its own copy)."""
        key = (label, split, view, layer, metric)
        if key not in self._series:
            self._series[key] = self._curve(*key)
        return self._series[key].copy()

    def _curve(self, label: str, split: str, view: str, layer: str, metric: str) -> pd.DataFrame:
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

    def view_names(self, label: str, split: str) -> list[str]:
        """The views measured on ``split`` by a group, in first-seen order."""
        rows = self.rows(label)
        return list(dict.fromkeys(rows.loc[rows["split"] == split, "view"].astype(str)))

    def eps_views(self, label: str, split: str, base: str = "pgd") -> dict[float, str]:
        """Views of ``base`` measured with their own radius (``pgd@eps=...``), by radius."""
        return views_of(self.view_names(label, split), base)

    def targeted_view(self, label: str, split: str) -> str | None:
        """The targeted view: one with its own radius (the largest when several), else the
        plain ``targeted`` view; None if neither was measured."""
        own = self.eps_views(label, split, "targeted")
        if own:
            return own[max(own)]
        return "targeted" if self.has(label, split, "targeted") else None

    def first_epoch(
        self, label: str, split: str, view: str, layer: str, metric: str, after: int = 0
    ) -> int | None:
        """The first epoch later than ``after`` with a value (e.g. the end of epoch 1)."""
        curve = self.series(label, split, view, layer, metric)
        curve = curve[curve["epoch"] > after]
        return int(curve["epoch"].iloc[0]) if len(curve) else None

    def eps_series(
        self, label: str, split: str, base: str, layer: str, metric: str
    ) -> dict[float, pd.DataFrame]:
        """One curve per attack radius of ``base`` (e.g. ``pgd``), by radius.

        From ``eps_study.parquet`` (``ncrobust measure --eps``), then the in-training views with
        their own radius (``pgd@eps=...``, a point at every measured epoch; they replace a
        study curve of the same radius), then the plain view at the run's own eps when no
        other curve has that radius. Radii are compared to 6 significant digits.
        """
        out: dict[float, pd.DataFrame] = {}
        table = self.eps_study
        if len(table):
            rows = table[
                (table["group"] == label)
                & (table["split"] == split)
                & (table["view"] == base)
                & (table["layer"] == layer)
                & (table["metric"] == metric)
            ]
            rows = rows[np.isfinite(rows["mean"].to_numpy(dtype=float))]
            for eps, block in rows.groupby("eps", sort=True):
                curve = block.sort_values("epoch").loc[:, ["epoch", "mean", "std", "n"]]
                out[_eps_key(float(eps))] = curve.reset_index(drop=True)
        for eps, view in self.eps_views(label, split, base).items():
            curve = self.series(label, split, view, layer, metric)
            if len(curve):
                out[_eps_key(eps)] = curve
        own = _eps_key(float(self.group(label).config.eps))
        if own not in out:
            curve = self.series(label, split, base, layer, metric)
            if len(curve):
                out[own] = curve
        return dict(sorted(out.items()))

    def has_eps_study(self, label: str, split: str, base: str = "pgd") -> bool:
        """Whether ``base`` was measured at a radius of its own (views or eps study)."""
        table = self.eps_study
        studied = bool(
            len(table)
            and ((table["group"] == label) & (table["split"] == split) & (table["view"] == base))
            .to_numpy()
            .any()
        )
        return studied or bool(self.eps_views(label, split, base))

    def eps_families(self, modes: Sequence[str] = ("at",)) -> list[list[RunGroup]]:
        """Groups of ``modes`` that differ only in training eps (and its step), each family
        with two or more eps, sorted by eps."""
        families: dict[tuple[object, ...], list[RunGroup]] = {}
        for group in self.groups_of(modes):
            settings = group.config.to_dict()
            key = tuple(
                (k, repr(v))
                for k, v in settings.items()
                if k not in ("eps", "alpha", "seed", "out", "device", "data_dir")
            )
            families.setdefault(key, []).append(group)
        return [
            sorted(f, key=lambda g: g.config.eps)
            for f in families.values()
            if len({g.config.eps for g in f}) > 1
        ]

    def metric_names(self) -> list[str]:
        """Every metric recorded by any group, in first-seen order."""
        return list(dict.fromkeys(self.metrics["metric"].astype(str))) if len(self.metrics) else []

    def perturbed_view(self, label: str, split: str) -> str | None:
        """The paper's "perturbed" view: ``train_adv`` for AT/TRADES when measured, else ``pgd``."""
        mode = self.group(label).mode
        order = ("train_adv", "pgd") if mode in ("at", "trades") else ("pgd", "train_adv")
        for view in order:
            if self.has(label, split, view):
                return view
        return None

    def layerwise_perturbed_view(self, label: str, split: str, epoch: int) -> str | None:
        """The perturbed view of the layerwise figures at ``epoch``.

        :meth:`perturbed_view` when it was measured at more than one layer; else ``pgd`` or
        ``train_adv`` if one of them was (an AT run measured after training has ``train_adv``
        at the penultimate layer only, and a layerwise ``pgd``); else :meth:`perturbed_view`.
        """
        preferred = self.perturbed_view(label, split)
        rows = self.rows(label)
        rows = rows[(rows["epoch"] == epoch) & (rows["split"] == split)]
        rows = rows[rows["layer"] != OUTPUT_LAYER]

        def layers(view: str | None) -> int:
            return int(rows.loc[rows["view"] == view, "layer"].nunique()) if view else 0

        if layers(preferred) > 1:
            return preferred
        for view in ("pgd", "train_adv"):
            if layers(view) > 1:
                return view
        return preferred

    def num_classes(self, label: str) -> int | None:
        """C from the attack statistics' classes, else from the dataset name; None if unknown."""
        stats = self.stats[self.stats["group"] == label]
        if len(stats):
            return int(stats["class"].max()) + 1
        return DATASET_CLASSES.get(self.group(label).config.dataset)


def _eps_key(eps: float) -> float:
    return float(f"{eps:.6g}")


class MissingRuns(UsageError):
    """No run matches a selection (``--where``)."""


def parse_where(text: str | None) -> dict[str, list[str]]:
    """``"dataset=cifar100,norm=l2"`` -> ``{"dataset": ["cifar100"], "norm": ["l2"]}``.

    A key given twice accepts either value (``mode=st,mode=at``); keys are those of
    :data:`WHERE_KEYS`; anything else is refused with a UsageError before any run is read.
    """
    out: dict[str, list[str]] = {}
    if text is None or not text.strip():
        return out
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key or not value:
            raise UsageError(f"--where: {item.strip()!r} is not KEY=VALUE (e.g. dataset=cifar10)")
        if key not in WHERE_KEYS:
            raise UsageError(f"--where: unknown key {key!r} (choose from {', '.join(WHERE_KEYS)})")
        out.setdefault(key, []).append(value.lower())
    return out


def select_runs(runs: Sequence[Run], where: Mapping[str, Sequence[str]]) -> list[Run]:
    """The runs whose config matches every key of ``where`` (any of its values)."""
    unknown = [k for k in where if k not in WHERE_KEYS]
    if unknown:
        raise UsageError(f"unknown selection key(s) {', '.join(unknown)}")
    chosen = [
        run
        for run in runs
        if all(str(getattr(run.config, k)).lower() in {v.lower() for v in where[k]} for k in where)
    ]
    if not chosen:
        wanted = ",".join(f"{k}={v}" for k, values in where.items() for v in values)
        raise MissingRuns(f"no run matches {wanted}")
    return chosen


def simplex_angle(num_classes: int) -> float:
    """The angle between two vertices of a centred simplex ETF, arccos(-1/(C-1)), in radians."""
    if num_classes < 2:
        raise ValueError(f"a simplex needs at least 2 classes, got {num_classes}")
    return math.acos(-1.0 / (num_classes - 1))
