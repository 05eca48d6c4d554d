"""The run directory: its layout and its two tidy tables, written atomically.

A run directory holds ``config.yaml`` (the fully resolved :class:`~ncrobust.config.TrainConfig`),
``metrics.parquet`` (one row per value: ``epoch, split, view, layer, metric, value``),
``attack_stats.parquet`` (the paper's Figure 7 statistics, one row per class and statistic:
``epoch, split, view, layer, class, statistic, value``), ``checkpoints/`` and ``log.txt``;
``ncrobust measure`` adds ``measurements.parquet`` and ``measurement_stats.parquet`` (the same
schemas, from checkpoints after training) and ``eps_study.parquet`` (with an ``eps`` column);
``ncrobust eval`` adds ``robustness.parquet`` (``epoch, split, attack, norm, eps, metric, value``).
Tables are rewritten whole through a temporary file and ``os.replace``, so a kill at any
moment leaves either the old or the new table, never a torn one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

METRIC_COLUMNS = ("epoch", "split", "view", "layer", "metric", "value")
STATS_COLUMNS = ("epoch", "split", "view", "layer", "class", "statistic", "value")
OUTPUT_LAYER = "output"  # the layer name of accuracy / loss rows
FIT_VIEW = "fit"  # rows about the optimisation itself (training loss, lr, seconds) per epoch
# what a scheduler's claim puts in a run directory before training starts (``sweep --executor``)
JOB_ENTRIES = frozenset({"job.json", "jobs"})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as parquet to ``path`` through a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def empty_metrics() -> pd.DataFrame:
    """An empty metrics table with the right columns and dtypes."""
    return _typed(pd.DataFrame(columns=list(METRIC_COLUMNS)), METRIC_COLUMNS)


def empty_stats() -> pd.DataFrame:
    """An empty attack-statistics table with the right columns and dtypes."""
    return _typed(pd.DataFrame(columns=list(STATS_COLUMNS)), STATS_COLUMNS)


def _typed(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
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


def _joined(frame: pd.DataFrame, extra: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not extra.exists():
        return frame
    joined = pd.concat([frame, _typed(pd.read_parquet(extra), columns)])
    keys = [c for c in columns if c != "value"]
    return joined.drop_duplicates(keys, keep="last").reset_index(drop=True)


@dataclass(frozen=True)
class RunDirectory:
    """Paths and table I/O of one run directory."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.parquet"

    @property
    def stats_path(self) -> Path:
        return self.root / "attack_stats.parquet"

    @property
    def measurements_path(self) -> Path:
        return self.root / "measurements.parquet"

    @property
    def measurement_stats_path(self) -> Path:
        return self.root / "measurement_stats.parquet"

    @property
    def eps_study_path(self) -> Path:
        return self.root / "eps_study.parquet"

    @property
    def robustness_path(self) -> Path:
        """Robust accuracy under strong attacks, written by ``ncrobust eval``."""
        return self.root / "robustness.parquet"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self.root / "log.txt"

    @property
    def done_path(self) -> Path:
        """Present once the last epoch is trained and measured."""
        return self.root / "DONE"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def is_complete(self) -> bool:
        return self.done_path.is_file()

    def read_metrics(self) -> pd.DataFrame:
        """The metrics table (empty if none was written yet)."""
        if not self.metrics_path.exists():
            return empty_metrics()
        return _typed(pd.read_parquet(self.metrics_path), METRIC_COLUMNS)

    def read_stats(self) -> pd.DataFrame:
        """The attack-statistics table (empty if none was written yet)."""
        if not self.stats_path.exists():
            return empty_stats()
        return _typed(pd.read_parquet(self.stats_path), STATS_COLUMNS)

    def read_all_metrics(self) -> pd.DataFrame:
        """Training-time rows joined with later ``measure`` rows (which win on the same key)."""
        return _joined(self.read_metrics(), self.measurements_path, METRIC_COLUMNS)

    def read_all_stats(self) -> pd.DataFrame:
        """Training-time Figure 7 rows joined with later ``measure`` rows."""
        return _joined(self.read_stats(), self.measurement_stats_path, STATS_COLUMNS)

    def append(
        self, metrics: Iterable[Mapping[str, Any]], stats: Iterable[Mapping[str, Any]] = ()
    ) -> None:
        """Append rows to both tables; each table is replaced atomically."""
        new_metrics = list(metrics)
        new_stats = list(stats)
        if new_stats:
            frame = pd.concat([self.read_stats(), _typed(pd.DataFrame(new_stats), STATS_COLUMNS)])
            atomic_write_parquet(frame.reset_index(drop=True), self.stats_path)
        if new_metrics:
            frame = pd.concat(
                [self.read_metrics(), _typed(pd.DataFrame(new_metrics), METRIC_COLUMNS)]
            )
            atomic_write_parquet(frame.reset_index(drop=True), self.metrics_path)

    def truncate_after(self, epoch: int) -> None:
        """Drop rows of epochs later than ``epoch`` (work lost in an interrupted epoch)."""
        for path, reader in (
            (self.metrics_path, self.read_metrics),
            (self.stats_path, self.read_stats),
        ):
            if path.exists():
                frame = reader()
                if (frame["epoch"] > epoch).any():
                    atomic_write_parquet(
                        frame[frame["epoch"] <= epoch].reset_index(drop=True), path
                    )

    def log(self, line: str) -> None:
        """Append one line to the human-readable log."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(line.rstrip("\n") + "\n")
