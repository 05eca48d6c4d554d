"""The run-directory lock: one writer, the holder named, released by any exit (SIGKILL too)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ncrobust.runs.lock import LOCK_NAME, RunLock, RunLocked, lock_holder

HOLD = (
    "import sys; from ncrobust.runs.lock import RunLock; "
    "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); sys.stdin.read()"
)


def _holder_process(root: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"  # the child holds the lock from here on
    return proc


def test_second_writer_refused_with_holder_named(tmp_path: Path) -> None:
    root = tmp_path / "run"
    proc = _holder_process(root)
    try:
        with pytest.raises(RunLocked) as info:
            RunLock(root).acquire()
        assert f"pid {proc.pid} on {socket.gethostname()}" in str(info.value)
        assert isinstance(info.value, ValueError)  # the CLI's exit-2 path
        holder = lock_holder(root)
        assert holder is not None and holder.pid == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_sigkilled_holder_releases(tmp_path: Path) -> None:
    root = tmp_path / "run"
    proc = _holder_process(root)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert lock_holder(root) is None
    with RunLock(root) as lock:
        assert lock.held
        holder = lock_holder(root)
        assert holder is not None and holder.pid == os.getpid()
    assert lock_holder(root) is None
    assert (root / LOCK_NAME).is_file()  # kept: never deleted under a waiting process


def test_two_locks_in_one_process_conflict(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run"), pytest.raises(RunLocked):
        RunLock(tmp_path / "run").acquire()


def test_probe_creates_nothing(tmp_path: Path) -> None:
    assert lock_holder(tmp_path / "absent") is None
    assert not (tmp_path / "absent").exists()


def test_unreadable_record_still_refuses(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with RunLock(root):
        (root / LOCK_NAME).write_bytes(b"\x00garbled")  # same inode: the lock stays held
        with pytest.raises(RunLocked, match="left no record"):
            RunLock(root).acquire()


def test_slurm_job_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    with RunLock(tmp_path / "run"):
        holder = lock_holder(tmp_path / "run")
    assert holder is not None and holder.job == "77_3"
