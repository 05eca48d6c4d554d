"""Optional experiment tracking: a run's config, metric rows and files sent to MLflow.

The trainer (and so ``sweep`` and ``demo``) talks to a :class:`Tracker` through four calls:
``start(config)``, ``log_rows(epoch, rows)``, ``log_artifacts(paths)`` and ``finish(status)``.
Without tracking they do nothing. With ``tracking: mlflow`` they write to an MLflow tracking
store: a local file store by default (``tracking_dir``, else ``$MLFLOW_TRACKING_URI``, else
``./mlruns``; no server, no account), one MLflow run per run directory, grouped in an
experiment named after the folder that holds the run directory (a sweep's root, the demo's
``--out``). A resumed run continues its MLflow run (found by the run directory's path tag).
MLflow is an optional extra: ``pip install 'ncrobust[track]'``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ncrobust.errors import UsageError

TRACKERS = ("mlflow",)  # the values of the config's ``tracking`` besides "" (off)
INSTALL_HINT = {"mlflow": "pip install 'ncrobust[track]' (or pip install mlflow)"}
RUN_DIR_TAG = "ncrobust.run_dir"  # the run directory a tracked run belongs to
URI_ENV = "MLFLOW_TRACKING_URI"
FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"
BATCH = 1000  # MLflow's limit of metrics per log_batch call


def check_tracking(kind: str, *, installed: bool = False) -> None:
    """Refuse an unknown tracker; with ``installed``, also one whose package is missing."""
    if kind == "":
        return
    if kind not in TRACKERS:
        raise UsageError(f"unknown tracking {kind!r} (known: {', '.join(TRACKERS)}, or empty)")
    if installed and importlib.util.find_spec(kind) is None:
        raise UsageError(f"tracking: {kind} needs the {kind} package: {INSTALL_HINT[kind]}")


def tracking_uri(directory: str) -> str:
    """The store to write to: ``directory`` (a path or URI), else ``$MLFLOW_TRACKING_URI``,
    else ``./mlruns``; a plain path becomes an absolute ``file:`` URI."""
    where = directory or os.environ.get(URI_ENV, "") or "mlruns"
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", where) and not re.match(r"^[A-Za-z]:[\\/]", where):
        return where  # already a URI (file:, http:, sqlite:, ...)
    return Path(where).resolve().as_uri()


def metric_key(row: Mapping[str, Any]) -> str:
    """``split/view/layer/metric`` with the characters MLflow refuses (``@``, ``=``) as ``_``."""
    key = f"{row['split']}/{row['view']}/{row['layer']}/{row['metric']}"
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", key)


class Tracker:
    """No tracking: every call does nothing (the default)."""

    def start(self, config: Mapping[str, Any]) -> None:
        """Record the run's configuration (once per tracked run)."""

    def log_rows(self, epoch: int, rows: Iterable[Mapping[str, Any]]) -> None:
        """Record metric rows (``split, view, layer, metric, value``) at step ``epoch``."""

    def log_artifacts(self, paths: Iterable[Path]) -> None:
        """Attach files (tables, logs, figures) to the tracked run."""

    def finish(self, status: str = "FINISHED") -> None:
        """Close the tracked run: ``FINISHED``, ``FAILED`` or ``KILLED``."""


class MLflowTracker(Tracker):
    """One MLflow run per run directory, through MLflow's client (no global active run, so
    several runs of one process, e.g. a sequential sweep, never mix)."""

    def __init__(self, uri: str, experiment: str, name: str, run_dir: Path) -> None:
        if uri.startswith("file:"):  # MLflow 3 keeps the file store behind an opt-in
            os.environ.setdefault(FILE_STORE_ENV, "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            found.experiment_id if found else self.client.create_experiment(experiment)
        )
        path = str(run_dir.resolve())
        quoted = path.replace("'", "\\'")
        earlier = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{RUN_DIR_TAG}` = '{quoted}'"
        )
        self.resumed = bool(earlier)
        if earlier:
            self.run_id = earlier[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {RUN_DIR_TAG: path, "mlflow.note.content": f"run directory: {path}"}
            self.run_id = self.client.create_run(
                self.experiment_id, run_name=name, tags=tags
            ).info.run_id

    def start(self, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        if self.resumed:
            return  # parameters are immutable in MLflow; the run's were logged at its start
        params = [Param(k, _param(v)) for k, v in config.items()]
        for first in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[first : first + 100])

    def log_rows(self, epoch: int, rows: Iterable[Mapping[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(metric_key(row), float(row["value"]), now, epoch)
            for row in rows
            if row["value"] is not None and math.isfinite(float(row["value"]))
        ]
        for first in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[first : first + BATCH])

    def log_artifacts(self, paths: Iterable[Path]) -> None:
        for path in paths:
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
            elif path.is_file():
                self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def _param(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def open_tracker(kind: str, directory: str, run_dir: Path) -> Tracker:
    """The tracker of a run directory: a no-op for ``""``, else the named backend (the
    experiment is the name of the folder that holds ``run_dir``)."""
    check_tracking(kind, installed=True)
    if kind == "":
        return Tracker()
    root = run_dir.resolve()
    return MLflowTracker(tracking_uri(directory), root.parent.name or "ncrobust", root.name, root)
