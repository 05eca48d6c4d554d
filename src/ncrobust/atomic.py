"""Atomic file writes: temporary file, fsync, rename; and the fault-injection hook.

Every file ncrobust writes goes through :func:`atomic_write_bytes`, so a kill at any moment
leaves either the old or the new file, never a torn one; a full disk raises
:class:`~ncrobust.errors.DiskFull` naming the file. ``NCROBUST_FAULT=ACTION@K`` makes the K-th
write of a process fail (``enospc``, ``edquot``, ``interrupt``) or kill it (``kill``, ``term``)
half-way, for deterministic crash tests.
"""

from __future__ import annotations

import errno
import io
import os
import re
import secrets
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from ncrobust.errors import DiskFull, UsageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()

# Every file ncrobust writes is first written to ``.NAME.XXXXXXXX.tmp`` next to it (``XXXXXXXX``
# from mkstemp) and renamed; only names of this pattern are ever removed as leftovers.
TEMP_PATTERN = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")

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


def check_fault_plan() -> None:
    """Refuse a malformed ``NCROBUST_FAULT`` before anything is claimed or written."""
    _fault_plan()


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


def open_regular(path: Path, flags: int, mode: int = 0o666) -> int:
    """``os.open`` that never follows a symlink at ``path`` and refuses anything but a regular
    file (a crafted run directory must not redirect a write or a read elsewhere)."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


def read_regular(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file ``path`` (never through a symlink)."""
    fd = open_regular(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limit)


def append_line(path: Path, line: str) -> None:
    """Append one line to a text log (a line torn by a kill is closed by the next append);
    a symlink at ``path`` is refused, never written through."""
    data = line.rstrip("\n").encode("utf-8") + b"\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_regular(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        with os.fdopen(fd, "rb+") as handle:
            _fault_point(path, None)
            if handle.seek(0, os.SEEK_END) > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    data = b"\n" + data
            handle.write(data)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(exc, path, len(data)) from exc
        raise
