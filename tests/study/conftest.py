"""Hand-made run directories with the trainer's table schema and paper-like numbers.

``paper_rows`` writes, for one mode and seed, every row the trainer writes: per-epoch ``fit``
rows, probe rows at epochs 0, 5, 10 (all layers at the last one) and attack statistics. Each
value is a known base value times a seed factor 0.9 / 1.0 / 1.1 for seeds 1 / 2 / 3, so three
seeds have mean = base and std = 0.1 · base exactly. ``overrides`` changes the last epoch's
base value of chosen rows to flip a finding. ``finding_rows`` adds what only the findings read
(a tighter targeted leap, skewed perturbed predictions, a falling TRADES KL term, the adaptive
NCC view): with it every finding of the paper holds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

from ncrobust.config import TrainConfig, write_config
from ncrobust.runs.directory import RunDirectory
from ncrobust.runs.tables import empty_metrics, empty_stats
from ncrobust.study.loading import Run, read_eps_study
from ncrobust.study.study import Study
from ncrobust.views import parse_label

EPOCHS = (0, 5, 10)
LAST = EPOCHS[-1]
CLASSES = 4
LAYERS = ("block1", "block2", "block3", "penultimate")
NC_METRICS = ("nc1", "nc2_equinorm", "nc2_equiangular", "nc4")
PENULTIMATE_ONLY = ("nc2_equinorm_w", "nc2_equiangular_w", "nc3", "nc3_frobenius")
REFERENCE_METRICS = ("ncc_match", "ncc_accuracy", "simplex_similarity", "angular_distance")
VIEWS = {
    "st": {
        "train": ("clean", "pgd", "gaussian", "targeted"),
        "test": ("clean", "pgd", "gaussian", "targeted"),
    },
    "at": {"train": ("clean", "train_adv", "gaussian"), "test": ("clean", "pgd", "gaussian")},
    "trades": {"train": ("clean", "train_adv", "gaussian"), "test": ("clean", "pgd", "gaussian")},
}
PERTURBED = ("pgd", "train_adv", "gaussian", "targeted")

# base value at the last epoch of (mode, view, metric) on the train split, penultimate layer
BASE: dict[str, dict[str, dict[str, float]]] = {
    "st": {
        "clean": {"accuracy": 1.0, "loss": 0.01, "nc1": 0.05},
        "pgd": {
            "accuracy": 0.0,
            "loss": 9.0,
            "kl": 8.0,
            "nc1": 5.0,
            "ncc_accuracy": 0.0,
            "ncc_match": 0.95,
            "simplex_similarity": 0.8,
            "angular_distance": 0.9,
        },
        "gaussian": {
            "accuracy": 0.99,
            "loss": 0.02,
            "kl": 0.01,
            "nc1": 0.07,
            "ncc_accuracy": 0.99,
            "ncc_match": 0.99,
            "simplex_similarity": 0.02,
            "angular_distance": 0.01,
        },
        "targeted": {
            "accuracy": 0.0,
            "loss": 12.0,
            "kl": 10.0,
            "target_accuracy": 0.95,
            "nc1": 3.0,
            "ncc_accuracy": 0.0,
            "ncc_match": 0.97,
            "simplex_similarity": 0.35,
            "angular_distance": 0.2,
        },
    },
    "at": {
        "clean": {"accuracy": 1.0, "loss": 0.05, "nc1": 0.3},
        "train_adv": {
            "accuracy": 0.98,
            "loss": 0.1,
            "nc1": 0.5,
            "nc4": 0.02,
            "ncc_accuracy": 0.97,
            "ncc_match": 0.99,
            "simplex_similarity": 0.1,
            "angular_distance": 0.05,
        },
        "pgd": {
            "accuracy": 0.5,
            "loss": 1.5,
            "kl": 0.6,
            "nc1": 1.5,
            "ncc_accuracy": 0.48,
            "ncc_match": 0.9,
            "simplex_similarity": 0.3,
            "angular_distance": 0.2,
        },
        "gaussian": {
            "accuracy": 1.0,
            "loss": 0.05,
            "kl": 0.001,
            "nc1": 0.31,
            "ncc_accuracy": 1.0,
            "ncc_match": 1.0,
            "simplex_similarity": 0.01,
            "angular_distance": 0.01,
        },
    },
    "trades": {
        "clean": {"accuracy": 1.0, "loss": 0.1, "nc1": 2.0, "nc2_equiangular": 0.3},
        "train_adv": {
            "accuracy": 0.95,
            "loss": 0.3,
            "nc1": 3.0,
            "ncc_accuracy": 0.9,
            "ncc_match": 0.95,
            "simplex_similarity": 0.3,
            "angular_distance": 0.2,
        },
        "pgd": {
            "accuracy": 0.5,
            "loss": 1.2,
            "kl": 0.3,
            "nc1": 4.0,
            "ncc_accuracy": 0.45,
            "ncc_match": 0.9,
            "simplex_similarity": 0.4,
            "angular_distance": 0.3,
        },
        "gaussian": {
            "accuracy": 1.0,
            "loss": 0.1,
            "kl": 0.001,
            "nc1": 2.1,
            "ncc_accuracy": 1.0,
            "ncc_match": 1.0,
            "simplex_similarity": 0.02,
            "angular_distance": 0.01,
        },
    },
}
# clean NC1 and pgd NCC accuracy of the non-final layers (last epoch), in depth order
LAYER_NC1 = {"st": (8.0, 2.0, 0.5), "at": (8.0, 5.0, 3.0), "trades": (8.0, 6.0, 4.0)}
LAYER_NCC_PGD = {"st": (0.6, 0.3, 0.05), "at": (0.5, 0.5, 0.49), "trades": (0.5, 0.5, 0.45)}

Key = tuple[str, str, str, str]  # split, view, layer, metric


def seed_factor(seed: int) -> float:
    return 1.0 + 0.1 * (seed - 2)


def base_value(mode: str, split: str, view: str, layer: str, metric: str) -> float:
    """The last epoch's base value of a row (before the seed factor).

    A view with its own radius (``pgd@eps=E``) has its view's values, NC metrics scaled by
    E / the run's eps (so NC1 rises with eps).
    """
    parsed = parse_label(view)
    if parsed.eps is not None:
        value = base_value(mode, split, parsed.base, layer, metric)
        if metric.startswith("nc") and not metric.startswith("ncc"):
            value *= parsed.eps / SETTINGS["eps"]
        return value
    table = BASE[mode][view]
    if layer != "penultimate" and layer != "output":
        depth = LAYERS.index(layer)
        if metric == "nc1" and view == "clean":
            return LAYER_NC1[mode][depth]
        if metric == "ncc_accuracy" and view == "pgd":
            return LAYER_NCC_PGD[mode][depth]
    if metric in table:
        value = table[metric]
    elif metric.startswith("nc2") or metric.startswith("nc3"):
        value = 0.1 if view in ("clean", "gaussian") else 0.4
    elif metric == "nc4":
        value = 0.01 if view in ("clean", "gaussian") else 0.3
    else:
        value = 0.5
    if split == "test" and metric.startswith("nc") and not metric.startswith("ncc"):
        value *= 1.5
    return value


def profile(epoch: int, rising: bool) -> float:
    """Time profile: NC metrics fall from 20× their final value at initialisation and 4× just
    after it (or rise from a quarter of it when ``rising``)."""
    t = epoch / LAST
    if rising:
        return 0.25 + 0.75 * t
    return 20.0 if epoch == 0 else 1.0 + 3.0 * (1.0 - t)  # initialisation: far from collapse


def paper_rows(
    mode: str,
    seed: int,
    overrides: Mapping[Key, float] | None = None,
    rising: Iterable[Key] = (),
    layerwise: bool = True,
    views: Mapping[str, Iterable[str]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(metric rows, attack-statistics rows) of one hand-made run."""
    overrides = dict(overrides or {})
    rising = set(rising)
    factor = seed_factor(seed)
    views = views or VIEWS[mode]
    metrics: list[dict[str, Any]] = []
    stats: list[dict[str, Any]] = []

    def add(epoch: int, split: str, view: str, layer: str, metric: str) -> None:
        key = (split, view, layer, metric)
        final = overrides.get(key, base_value(mode, split, view, layer, metric))
        moving = metric.startswith("nc") and metric not in ("ncc_match", "ncc_accuracy")
        value = final * (profile(epoch, key in rising) if moving or key in rising else 1.0)
        metrics.append(
            {
                "epoch": epoch,
                "split": split,
                "view": view,
                "layer": layer,
                "metric": metric,
                "value": value * factor,
            }
        )

    for epoch in range(1, LAST + 1):
        fit = {"loss": 1.0 / epoch, "accuracy": 1.0 - 0.5 / epoch, "lr": 0.1, "seconds": 1.0}
        if mode == "trades":
            fit |= {"ce_loss": 0.5 / epoch, "kl_loss": 0.2 / epoch}
        metrics += [
            {
                "epoch": epoch,
                "split": "train",
                "view": "fit",
                "layer": "output",
                "metric": k,
                "value": v * factor,
            }
            for k, v in fit.items()
        ]
    for epoch in EPOCHS:
        layers = LAYERS if (layerwise and epoch == LAST) else ("penultimate",)
        for split, split_views in views.items():
            for view in split_views:
                outputs = ["accuracy", "loss"]
                if parse_label(view).base in PERTURBED and view != "train_adv":
                    outputs.append("kl")
                if parse_label(view).base == "targeted":
                    outputs.append("target_accuracy")
                for metric in outputs:
                    add(epoch, split, view, "output", metric)
                for layer in layers:
                    names = list(NC_METRICS)
                    if layer == "penultimate":
                        names += PENULTIMATE_ONLY
                    if (split, view) != ("train", "clean"):
                        names += REFERENCE_METRICS
                    for metric in names:
                        add(epoch, split, view, layer, metric)
                    if view in PERTURBED:
                        for c in range(CLASSES):
                            for statistic, value in (
                                ("predicted_count", 10.0 + c),
                                ("clean_mean_norm", 5.0 + c),
                                ("predicted_mean_norm", 4.0 + c),
                                ("angle", 0.1 + 0.01 * c),
                            ):
                                stats.append(
                                    {
                                        "epoch": epoch,
                                        "split": split,
                                        "view": view,
                                        "layer": layer,
                                        "class": c,
                                        "statistic": statistic,
                                        "value": value * factor,
                                    }
                                )
    return metrics, stats


# what only the findings read, on top of paper_rows (see finding_rows)
FINDING_OVERRIDES: dict[str, dict[Key, float]] = {
    "st": {("train", "targeted", "penultimate", "simplex_similarity"): 0.2},
}
ADAPTIVE_NCC = (0.45, 0.25, 0.05)  # ST NCC accuracy under the adaptive attack, early layers


def finding_rows(
    mode: str,
    seed: int,
    overrides: Mapping[Key, float] | None = None,
    adaptive: bool = True,
    **options: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """:func:`paper_rows` with the numbers only the findings read made paper-like: targeted
    means within 0.13 of the between-class angle, pgd predictions piled on class 0, a TRADES
    KL term falling as 1/epoch², and (``adaptive``) ST rows of the ``ncc_adaptive`` view;
    ``options`` go to :func:`paper_rows`."""
    over = FINDING_OVERRIDES.get(mode, {}) | dict(overrides or {})
    metrics, stats = paper_rows(mode, seed, over, **options)
    layerwise = options.get("layerwise", True)
    factor = seed_factor(seed)
    for row in metrics:
        if row["metric"] == "kl_loss":
            row["value"] = 0.2 / row["epoch"] ** 2 * factor
    for row in stats:
        if row["statistic"] == "predicted_count" and row["view"] == "pgd":
            row["value"] = (40.0 if row["class"] == 0 else 2.0) * factor
    if mode == "st" and layerwise and adaptive:
        for split in ("train", "test"):
            for layer, value in zip(LAYERS, ADAPTIVE_NCC, strict=False):
                metrics.append(
                    {
                        "epoch": LAST,
                        "split": split,
                        "view": "ncc_adaptive",
                        "layer": layer,
                        "metric": "ncc_accuracy",
                        "value": over.get((split, "ncc_adaptive", layer, "ncc_accuracy"), value)
                        * factor,
                    }
                )
    return metrics, stats


SETTINGS = {
    "dataset": "digits",
    "model": "small_cnn",
    "epochs": LAST,
    "eps": 8 / 255,
    "measure_every": 5,
}


def memory_run(
    mode: str = "st",
    seed: int = 1,
    metrics: list[dict[str, Any]] | None = None,
    stats: list[dict[str, Any]] | None = None,
    **config: Any,
) -> Run:
    """The :class:`Run` that :func:`write_run` would give, built in memory (no files)."""
    if metrics is None:
        metrics, default_stats = paper_rows(mode, seed)
        stats = default_stats if stats is None else stats
    settings = SETTINGS | config
    out = f"memory/{mode}_seed{seed}"
    return Run(
        path=Path(out),
        config=TrainConfig(mode=mode, seed=seed, out=out, **settings),
        metrics=_frame(metrics, empty_metrics()),
        stats=_frame(stats or [], empty_stats()),
        eps_study=read_eps_study(Path(out)),
    )


def _frame(rows: list[dict[str, Any]], empty: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(empty.columns)).astype(empty.dtypes.to_dict())


def write_run(
    root: Path,
    mode: str = "st",
    seed: int = 1,
    metrics: list[dict[str, Any]] | None = None,
    stats: list[dict[str, Any]] | None = None,
    eps_study: pd.DataFrame | None = None,
    **config: Any,
) -> Path:
    """A run directory at ``root`` with a config and the given (or paper-like) tables."""
    if metrics is None:
        metrics, default_stats = paper_rows(mode, seed)
        stats = default_stats if stats is None else stats
    settings = SETTINGS | config
    write_config(TrainConfig(mode=mode, seed=seed, out=str(root), **settings), root / "config.yaml")
    RunDirectory(root).append(metrics, stats or [])
    if eps_study is not None:
        eps_study.to_parquet(root / "eps_study.parquet", index=False)
    return root


MakeRun = Callable[..., Path]


@pytest.fixture
def make_run(tmp_path: Path) -> MakeRun:
    """``make_run(name, mode=..., seed=..., metrics=..., **config)`` -> a run directory."""

    def make(name: str, mode: str = "st", seed: int = 1, **kwargs: Any) -> Path:
        return write_run(tmp_path / "runs" / name, mode, seed, **kwargs)

    return make


@pytest.fixture(scope="session")
def paper_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ST, AT and TRADES with seeds 1, 2, 3 each: every finding of the paper holds (read-only)."""
    root = tmp_path_factory.mktemp("paper") / "runs"
    for mode in ("st", "at", "trades"):
        for seed in (1, 2, 3):
            write_run(root / f"{mode}_seed{seed}", mode, seed)
    return root


@pytest.fixture(scope="session")
def paper_study(paper_runs: Path) -> Study:
    """The :class:`Study` of ``paper_runs`` (shared; do not mutate)."""
    return Study.from_paths([paper_runs])


@pytest.fixture(scope="session")
def finding_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`finding_rows` runs on disk, TRADES, ST and AT with seeds 1, 2, 3 (read-only)."""
    root = tmp_path_factory.mktemp("findings") / "runs"
    for mode in ("trades", "st", "at"):
        for seed in (1, 2, 3):
            metrics, stats = finding_rows(mode, seed)
            write_run(root / f"{mode}_seed{seed}", mode, seed, metrics=metrics, stats=stats)
    return root


@pytest.fixture(scope="session")
def finding_study() -> Study:
    """ST, AT and TRADES with seeds 1, 2, 3 from :func:`finding_rows`: every finding holds."""
    runs = [
        memory_run(mode, seed, *finding_rows(mode, seed))
        for mode in ("st", "at", "trades")
        for seed in (1, 2, 3)
    ]
    return Study.from_runs(runs)


@pytest.fixture(scope="session")
def fake() -> ModuleType:
    """This module: its table builders and constants, for tests that need the known values."""
    return sys.modules[__name__]
