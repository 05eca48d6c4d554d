"""The run directory: its layout, its tables and how one writer claims it.

A run directory holds ``config.yaml`` (the fully resolved :class:`~ncrobust.config.TrainConfig`),
``metrics.parquet``, ``attack_stats.parquet`` (:mod:`ncrobust.runs.tables`), ``checkpoints/``
and ``log.txt``; ``ncrobust measure`` adds ``measurements.parquet`` and
``measurement_stats.parquet`` (the same schemas, from checkpoints after training) and
``eps_study.parquet`` (with an ``eps`` column); ``ncrobust eval`` adds ``robustness.parquet``.
Every file is written atomically (:mod:`ncrobust.atomic`). :func:`claim` locks a run directory
for one writer and decides how it starts; only files ncrobust writes are ever deleted.
"""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ncrobust.atomic import (
    TEMP_PATTERN,
    append_line,
    atomic_write_parquet,
    atomic_write_text,
)
from ncrobust.config import TrainConfig, is_ncrobust_config, read_config
from ncrobust.errors import UsageError
from ncrobust.runs.lock import LOCK_NAME, RunLock
from ncrobust.runs.tables import (
    METRIC_COLUMNS,
    STATS_COLUMNS,
    empty_metrics,
    empty_stats,
    joined,
    read_robustness_table,
    typed,
)

# what a scheduler's claim puts in a run directory before training starts (``sweep --executor``)
JOB_ENTRIES = frozenset({"job.json", "jobs"})
# What ncrobust writes in a run directory: only these are ever deleted (``--overwrite``).
OWN_FILES = (
    "config.yaml",
    "metrics.parquet",
    "attack_stats.parquet",
    "measurements.parquet",
    "measurement_stats.parquet",
    "eps_study.parquet",
    "robustness.parquet",
    "log.txt",
    "DONE",
)
OWN_IN_FOLDER = {
    "checkpoints": re.compile(r"last\.safetensors|epoch-[0-9]+\.safetensors"),
    "tensorboard": re.compile(r"events\.out\.tfevents\..+"),
}


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one of ncrobust's own temporary files (left by a kill)."""
    match = TEMP_PATTERN.fullmatch(name)
    if match is None:
        return False
    target = match.group("name")
    return target in OWN_FILES or OWN_IN_FOLDER["checkpoints"].fullmatch(target) is not None


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete ncrobust's leftover temporary files directly in ``folder``; returns them."""
    removed = []
    if folder.is_dir():
        for entry in folder.iterdir():
            if is_temporary(entry.name) and entry.is_file() and not entry.is_symlink():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


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

    def read_config(self) -> TrainConfig:
        """The run's validated ``config.yaml``; a missing or bad one is a one-line UsageError."""
        if not self.exists():
            raise UsageError(f"{self.root} is not a run directory (no config.yaml)")
        return read_config(self.config_path)

    def read_metrics(self) -> pd.DataFrame:
        """The metrics table (empty if none was written yet)."""
        if not self.metrics_path.exists():
            return empty_metrics()
        return typed(pd.read_parquet(self.metrics_path), METRIC_COLUMNS)

    def read_stats(self) -> pd.DataFrame:
        """The attack-statistics table (empty if none was written yet)."""
        if not self.stats_path.exists():
            return empty_stats()
        return typed(pd.read_parquet(self.stats_path), STATS_COLUMNS)

    def read_all_metrics(self) -> pd.DataFrame:
        """Training-time rows joined with later ``measure`` rows (which win on the same key)."""
        return joined(self.read_metrics(), self.measurements_path, METRIC_COLUMNS)

    def read_all_stats(self) -> pd.DataFrame:
        """Training-time Figure 7 rows joined with later ``measure`` rows."""
        return joined(self.read_stats(), self.measurement_stats_path, STATS_COLUMNS)

    def read_robustness(self) -> pd.DataFrame:
        """The robustness table of ``ncrobust eval`` (empty, with its columns, when absent)."""
        return read_robustness_table(self.robustness_path)

    def append(
        self, metrics: Iterable[Mapping[str, Any]], stats: Iterable[Mapping[str, Any]] = ()
    ) -> None:
        """Append rows to both tables; each table is replaced atomically."""
        new_metrics = list(metrics)
        new_stats = list(stats)
        if new_stats:
            frame = pd.concat([self.read_stats(), typed(pd.DataFrame(new_stats), STATS_COLUMNS)])
            atomic_write_parquet(frame.reset_index(drop=True), self.stats_path)
        if new_metrics:
            frame = pd.concat(
                [self.read_metrics(), typed(pd.DataFrame(new_metrics), METRIC_COLUMNS)]
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
        append_line(self.log_path, line)

    def mark_done(self, epochs: int) -> None:
        """Write the ``DONE`` marker (atomically, like every other file)."""
        atomic_write_text(self.done_path, f"{epochs}\n")

    # -- what is in the directory ------------------------------------------------------

    def entries(self) -> list[str]:
        """Names in the directory, less the lock file, ncrobust's temporary files and a sweep
        job's claim and logs (a run directory a job was submitted for is still empty)."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.name != LOCK_NAME
            and entry.name not in JOB_ENTRIES
            and not is_temporary(entry.name)
        )

    def is_empty(self) -> bool:
        """Whether the directory holds nothing but (maybe) the lock and leftover temporaries."""
        return not self.entries()

    def is_run(self) -> bool:
        """Whether the directory holds a ``config.yaml`` written by ncrobust."""

        return self.config_path.is_file() and is_ncrobust_config(self.config_path)

    def foreign_entries(self) -> list[str]:
        """Names in the directory that ncrobust did not write."""
        return [
            name for name in self.entries() if name not in OWN_FILES and name not in OWN_IN_FOLDER
        ]

    def remove_temporaries(self) -> list[Path]:
        """Delete temporary files a killed writer left in the directory and its checkpoints."""
        return remove_temporaries(self.root) + remove_temporaries(self.checkpoint_dir)

    def clear(self, keep: Iterable[str] = ()) -> None:
        """Delete what ncrobust wrote here (never the directory itself, the lock or other
        files), except the names in ``keep``."""
        kept = set(keep)
        self.remove_temporaries()
        for name in OWN_FILES:
            path = self.root / name
            if name not in kept and path.is_file() and not path.is_symlink():
                path.unlink()
        for folder, pattern in OWN_IN_FOLDER.items():
            path = self.root / folder
            if folder in kept or path.is_symlink() or not path.is_dir():
                continue
            for entry in path.iterdir():
                if pattern.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
                    entry.unlink()
            if not any(path.iterdir()):
                path.rmdir()

    def check_tables(self, epoch: int) -> None:
        """Refuse to resume at ``epoch`` from tables that are missing, unreadable or
        incomplete (the rows of an epoch are written before its checkpoint)."""
        for path, columns, required in (
            (self.metrics_path, METRIC_COLUMNS, True),
            (self.stats_path, STATS_COLUMNS, False),
        ):
            if not path.exists():
                if required:
                    raise UsageError(
                        f"cannot resume {self.root}: {path.name} is missing although the "
                        f"checkpoint is at epoch {epoch}; its rows cannot be recovered"
                    )
                continue
            try:
                frame = pd.read_parquet(path)
            except Exception as exc:
                raise UsageError(f"cannot resume: {path} is unreadable ({exc})") from None
            if tuple(frame.columns) != columns:
                raise UsageError(
                    f"cannot resume: {path} has columns {list(frame.columns)}, expected "
                    f"{list(columns)}"
                )
            if required and not (frame["epoch"] == epoch).any():
                raise UsageError(
                    f"cannot resume: {path} holds no rows of epoch {epoch}, the checkpoint's"
                )


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """The run directories named by ``paths`` (each a run or a folder of runs), in order, once.

    Raises :class:`UsageError` for a path that does not exist or holds no run, before any
    table is read.
    """
    found: list[Path] = []
    given = list(paths)
    if not given:
        raise UsageError("no run directories given")
    for raw in given:
        path = Path(raw)
        if not path.exists():
            raise UsageError(f"{path}: no such directory")
        if not path.is_dir():
            raise UsageError(f"{path}: not a directory (expected a run directory or runs folder)")
        if RunDirectory(path).exists():
            runs = [path]
        else:
            # a folder of runs: every directory below it with a config.yaml (checkpoints skipped)
            runs = sorted(
                p.parent
                for p in path.rglob("config.yaml")
                if p.is_file() and "checkpoints" not in p.relative_to(path).parts[:-1]
            )
            if not runs:
                raise UsageError(
                    f"{path}: not a run directory (no config.yaml) and no run directory below it"
                )
        for run in runs:
            resolved = run.resolve()
            if resolved not in {r.resolve() for r in found}:
                found.append(run)
    return found


@dataclass
class Claim:
    """A run directory locked for writing, and what the writer found there."""

    run: RunDirectory
    lock: RunLock
    state: str  # "new" (empty or absent), "replace" (--overwrite of a run), "resume", "restart"
    created: bool  # the directory did not exist before

    def abandon(self) -> None:
        """Undo the claim after a failure before anything was written: drop the lock, and the
        directory too when this claim created it.

        The lock file is deleted only from a directory holding nothing else; every writer
        takes the lock without waiting, so no other process is queued on the deleted file.
        """
        self.lock.release()
        if self.state in ("new", "replace") and self.run.entries() == []:
            (self.run.root / LOCK_NAME).unlink(missing_ok=True)
            if self.created:
                with contextlib.suppress(OSError):
                    self.run.root.rmdir()

    def release(self) -> None:
        self.lock.release()


def claim(root: Path, *, resume: bool, overwrite: bool, checkpoint: str) -> Claim:
    """Lock the run directory ``root`` for writing and decide how the writer starts.

    The lock is taken before the directory is inspected, so two writers cannot both decide
    to start. An absent or empty directory (the lock and ncrobust's temporary files do not
    count) starts a new run, kept as it is; a run (an ncrobust ``config.yaml``) is continued
    with ``resume`` (from scratch when no ``checkpoint`` was written yet) or replaced with
    ``overwrite``; anything else is refused. Problems with the path itself (read-only file
    system, a parent that is a file, a name too long) are one :class:`UsageError`.
    """

    root = Path(root)
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    run = RunDirectory(root)
    lock = RunLock(root)
    try:
        if root.exists() and not root.is_dir():
            raise UsageError(f"output path {root} exists and is not a directory")
        created = not root.exists()
        if resume and not run.config_path.is_file():
            raise UsageError(f"cannot resume: {root} holds no run (no config.yaml)")
        _decide(run, resume=resume, overwrite=overwrite, checkpoint=checkpoint)  # no lock file
        lock.acquire()  # in a directory that is refused anyway
    except OSError as exc:
        raise UsageError(out_problem(root, exc)) from None
    result = Claim(run, lock, "new", created)
    try:  # decided again under the lock: another writer may have started meanwhile
        result.state = _decide(run, resume=resume, overwrite=overwrite, checkpoint=checkpoint)
    except BaseException:
        result.abandon()
        raise
    return result


def _decide(run: RunDirectory, *, resume: bool, overwrite: bool, checkpoint: str) -> str:
    """How a writer starts in ``run`` (see :func:`claim`), or the reason it may not."""
    root = run.root
    if resume:
        if not run.config_path.is_file():
            raise UsageError(f"cannot resume: {root} holds no run (no config.yaml)")
        return "resume" if (run.checkpoint_dir / checkpoint).is_file() else "restart"
    if run.is_empty():
        return "new"
    if not overwrite:
        raise UsageError(
            f"output directory {root} is not empty: pass --resume {root} to continue "
            "that run or --overwrite to replace it"
        )
    if not run.is_run():
        shown = ", ".join(run.foreign_entries()[:5] or run.entries()[:5])
        raise UsageError(
            f"--overwrite replaces only a run directory, and {root} holds no ncrobust "
            f"config.yaml (it holds {shown}); choose another --out"
        )
    return "replace"


def out_problem(root: Path, exc: OSError) -> str:
    """One line saying why ``root`` cannot hold a run directory."""
    reasons = {
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOTDIR: "a parent of it is not a directory",
        errno.EEXIST: "a parent of it is not a directory",
        errno.ENAMETOOLONG: "the name is too long",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.ELOOP: "too many levels of symbolic links",
    }
    reason = reasons.get(exc.errno or 0, exc.strerror or str(exc))
    return f"cannot use {root} as a run directory: {reason}"
