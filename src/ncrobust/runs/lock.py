"""One writer per run directory: an advisory file lock held for the writing process's life.

The lock is ``flock`` on ``RUN/.lock``. The kernel releases it when its holder exits in any
way (SIGKILL included), so a lock is never stale and nothing has to be cleaned up after a
crash. The file also records who holds it (pid, host, SLURM job when there is one) so that a
refused writer can name the holder. The file itself stays in place: deleting it while
another process waits on it would let two writers hold two different files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ncrobust.atomic import open_regular
from ncrobust.errors import UsageError

LOCK_NAME = ".lock"


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a run directory's lock."""

    pid: int
    host: str
    job: str = ""  # the SLURM job (``JOBID`` or ``ARRAYJOB_TASK``) when run under SLURM
    since: float = 0.0  # time.time() when the lock was taken

    def describe(self) -> str:
        if self.pid <= 0:
            return "a process that left no record"
        job = f", SLURM job {self.job}" if self.job else ""
        return f"pid {self.pid} on {self.host}{job}"


class RunLocked(UsageError):
    """Another live process holds the run directory's lock."""

    def __init__(self, root: Path, holder: Holder) -> None:
        super().__init__(
            f"run directory {root} is being written by {holder.describe()}; one writer at a time"
        )
        self.root = root
        self.holder = holder


def current_job() -> str:
    """The SLURM job of this process (array jobs as ``ARRAYJOB_TASK``), or ``""``."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID", "")


def _read_holder(fd: int) -> Holder:
    """The holder recorded in an open lock file (pid 0 when unreadable or empty)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return Holder(
            int(data["pid"]),
            str(data["host"]),
            str(data.get("job", "")),
            float(data.get("since", 0.0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return Holder(pid=0, host="unknown")


class RunLock:
    """The exclusive lock of one run directory; ``with RunLock(root):`` holds it for the block.

    ``acquire`` creates ``root`` (and its parents) when needed and raises :class:`RunLocked`
    at once, without waiting, when another process holds the lock.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            fd = open_regular(self.path, os.O_RDWR | os.O_CREAT)  # never through a symlink
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EINVAL):
                raise
            raise UsageError(
                f"{self.path} is a symbolic link or not a file: ncrobust never writes through it"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLocked(self.root, holder) from None
            raise
        # The record is informational: written in place (the locked inode must stay the same).
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "job": current_job(),
            "since": time.time(),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
        except OSError:
            pass  # a full disk must not stop the lock itself; the holder is then "unknown"
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def lock_holder(root: str | Path) -> Holder | None:
    """The live process holding ``root``'s lock, or ``None`` when nobody writes it now.

    A probe takes and drops a shared lock; it never creates the directory or the lock file.
    """
    path = Path(root) / LOCK_NAME
    try:
        fd = open_regular(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
