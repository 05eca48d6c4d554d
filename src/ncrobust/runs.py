"""The run directory: its layout and its two tidy tables, written atomically.

A run directory holds ``config.yaml`` (the fully resolved :class:`~ncrobust.config.TrainConfig`),
``metrics.parquet`` (one row per value: ``epoch, split, view, layer, metric, value``),
``attack_stats.parquet`` (the paper's Figure 7 statistics, one row per class and statistic:
``epoch, split, view, layer, class, statistic, value``), ``checkpoints/`` and ``log.txt``;
``ncrobust measure`` adds ``measurements.parquet`` and ``measurement_stats.parquet`` (the same
schemas, from checkpoints after training) and ``eps_study.parquet`` (with an ``eps`` column);
``ncrobust eval`` adds ``robustness.parquet`` (``epoch, split, attack, norm, eps, metric, value``).
Every file is written through :func:`atomic_write_bytes` (temporary file, fsync, rename), so a
kill at any moment leaves either the old or the new file, never a torn one; a full disk raises
:class:`~ncrobust.errors.DiskFull` naming the file. ``NCROBUST_FAULT=ACTION@K`` makes the K-th
write of a process fail (``enospc``, ``edquot``, ``interrupt``) or kill it (``kill``, ``term``)
half-way, for deterministic crash tests. :func:`claim` locks a run directory for one writer
and decides how it starts; only files ncrobust writes are ever deleted.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from ncrobust.errors import DiskFull, UsageError

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

# Every file ncrobust writes is first written to ``.NAME.XXXXXXXX.tmp`` next to it (``XXXXXXXX``
# from mkstemp) and renamed; only names of this pattern are ever removed as leftovers.
TEMP_PATTERN = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")
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
LOCK_NAME = ".lock"  # ncrobust.runlock's lock file
FAULT_ENV = "NCROBUST_FAULT"  # e.g. "kill@3": SIGKILL this process during its 3rd file write
TRACE_ENV = "NCROBUST_WRITE_TRACE"  # a file to which every write appends "index<TAB>path"
_writes = 0  # file writes of this process so far (the fault-injection hook counts them)


def _fault_plan() -> dict[int, str]:
    """``NCROBUST_FAULT`` as write index -> action (``enospc@3,kill@7``)."""
    text = os.environ.get(FAULT_ENV, "").strip()
    plan: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        action, _, index = item.partition("@")
        if action not in ("enospc", "edquot", "kill", "term", "interrupt") or not index.isdigit():
            raise UsageError(
                f"{FAULT_ENV}={text!r}: expected ACTION@N items with ACTION one of "
                "enospc, edquot, kill, term, interrupt"
            )
        plan[int(index)] = action
    return plan


def _fault_point(path: Path, handle: BinaryIO | None) -> None:
    """Count one file write; misbehave as ``NCROBUST_FAULT`` asks at its index.

    Faults strike half-way through the write (after part of the data reached the temporary
    file), where a real kill or a full disk would leave the most damage.
    """
    global _writes
    _writes += 1
    trace = os.environ.get(TRACE_ENV)
    if trace:
        with open(trace, "a", encoding="utf-8") as log:
            log.write(f"{_writes}\t{path}\n")
    if FAULT_ENV not in os.environ:
        return
    action = _fault_plan().get(_writes)
    if action is None:
        return
    if handle is not None:
        handle.write(b"\0" * 64)  # a partial write, as a real fault would leave
        handle.flush()
    if action in ("enospc", "edquot"):
        code = errno.ENOSPC if action == "enospc" else errno.EDQUOT
        raise OSError(code, os.strerror(code), str(path))
    if action == "interrupt":
        raise KeyboardInterrupt
    os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGTERM)
    time.sleep(5)  # the signal arrives before this ends (SIGTERM: raised by the handler)


def write_count() -> int:
    """File writes of this process so far (the indices ``NCROBUST_FAULT`` refers to)."""
    return _writes


def _disk_full(exc: OSError, path: Path, needed: int) -> DiskFull:
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = 0
    return DiskFull(
        f"no space left writing {path} (needs {_size(needed)} free, {_size(free)} available)"
        if exc.errno == errno.ENOSPC
        else f"disk quota exceeded writing {path} (needs {_size(needed)} more quota)",
        path,
        needed,
    )


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename is still atomic
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``: temporary file in the same directory, fsync, rename.

    Every file ncrobust writes goes through here (tables, configs, checkpoints, markers), so a
    kill at any moment leaves the old file or the new one, and a full disk raises
    :class:`~ncrobust.errors.DiskFull` naming the path and the space it needed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(exc, path, len(data)) from exc
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            _fault_point(path, handle)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(exc, path, len(data)) from exc
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as parquet to ``path`` atomically."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_copy(source: Path, target: Path) -> None:
    """Make ``target`` a complete copy of ``source`` atomically (a hard link when possible).

    The link (or copy) is made under a temporary name and renamed, so ``target`` is never a
    partial file; the data itself was already synced when ``source`` was written.
    """
    target = Path(target)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        _fault_point(target, None)
        try:
            os.link(source, tmp)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            shutil.copyfile(source, tmp)  # no hard links here (e.g. some network file systems)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(exc, target, Path(source).stat().st_size) from exc
        raise
    _fsync_dir(target.parent)


def append_line(path: Path, line: str) -> None:
    """Append one line to a text log (a line torn by a kill is closed by the next append)."""
    data = line.rstrip("\n").encode("utf-8") + b"\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab+") as handle:
            _fault_point(path, None)
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    data = b"\n" + data
            handle.write(data)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(exc, path, len(data)) from exc
        raise


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
        from ncrobust.config import is_ncrobust_config

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


@dataclass
class Claim:
    """A run directory locked for writing, and what the writer found there."""

    run: RunDirectory
    lock: Any  # ncrobust.runlock.RunLock
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
    from ncrobust.runlock import RunLock

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
