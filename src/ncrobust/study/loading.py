"""Find and read run directories: their config and tables, checked before any analysis.

A path given by the user is either one run directory (it holds ``config.yaml``) or a folder
whose subfolders (at any depth) hold runs, such as ``runs/`` after a sweep.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from ncrobust.config import TrainConfig, apply_overrides, read_config
from ncrobust.errors import UsageError
from ncrobust.runs.directory import ZOO_FILE, RunDirectory, find_run_dirs

EPS_STUDY_FILE = "eps_study.parquet"
EPS_STUDY_COLUMNS = ("epoch", "eps", "split", "view", "layer", "metric", "value")


@dataclass(frozen=True)
class Run:
    """One run directory's resolved config and tables (``eps_study`` is empty when absent)."""

    path: Path
    config: TrainConfig
    metrics: pd.DataFrame
    stats: pd.DataFrame
    eps_study: pd.DataFrame

    @property
    def name(self) -> str:
        return self.path.name


def read_eps_study(path: Path) -> pd.DataFrame:
    """The run's small-eps study table (``epoch, eps, split, view, layer, metric, value``)."""
    file = path / EPS_STUDY_FILE
    if not file.is_file():
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in EPS_STUDY_COLUMNS})
    frame = pd.read_parquet(file)
    missing = [c for c in EPS_STUDY_COLUMNS if c not in frame.columns]
    if missing:
        raise UsageError(f"{file}: missing column(s) {', '.join(missing)}")
    frame = frame.loc[:, list(EPS_STUDY_COLUMNS)]
    return frame.astype({c: _dtype(c) for c in EPS_STUDY_COLUMNS})


def _dtype(column: str) -> str:
    return {"epoch": "int64", "eps": "float64", "value": "float64"}.get(column, "string")


def load_run(path: str | Path) -> Run:
    """Read one run directory (its config must parse; tables may still be empty)."""
    directory = RunDirectory(Path(path))
    zoo_file = directory.root / ZOO_FILE
    if not directory.exists() and not zoo_file.is_file():
        raise UsageError(f"{path}: not a run directory (no config.yaml)")
    try:
        config = read_config(directory.config_path) if directory.exists() else zoo_config(zoo_file)
    except ValueError as exc:
        raise UsageError(f"{directory.config_path}: {exc}") from exc
    return Run(
        path=directory.root,
        config=config,
        metrics=directory.read_all_metrics(),
        stats=directory.read_all_stats(),
        eps_study=read_eps_study(directory.root),
    )


def zoo_config(path: Path) -> TrainConfig:
    """The run fields of a measured zoo model (``zoo.yaml``'s ``config``), type-checked; its
    model is the zoo's entry, not one of ncrobust's, so it is not validated as a training run."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise UsageError(f"{path}: no 'config' mapping")
    return apply_overrides(TrainConfig(), data["config"])


def load_runs(paths: str | Path | Iterable[str | Path]) -> list[Run]:
    """Every run under ``paths`` (one path or several; see :func:`find_run_dirs`), read;
    refuses a set with no rows."""
    many = [paths] if isinstance(paths, str | Path) else paths
    runs = [load_run(p) for p in find_run_dirs(many)]
    if all(run.metrics.empty for run in runs):
        names = ", ".join(str(r.path) for r in runs)
        raise UsageError(f"no metrics recorded yet in {names}")
    return runs
