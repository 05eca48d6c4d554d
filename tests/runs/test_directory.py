"""The run-directory layer: atomic writes, the fault hook, full disks, claiming a directory."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ncrobust import atomic
from ncrobust.atomic import append_line, atomic_copy, atomic_write_bytes, atomic_write_parquet
from ncrobust.errors import DiskFull, UsageError
from ncrobust.runs.directory import RunDirectory, claim, is_temporary
from ncrobust.runs.lock import RunLock


@pytest.fixture
def fault(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Set ``NCROBUST_FAULT`` relative to this process's write counter."""

    def arm(action: str, nth: int = 1) -> None:
        monkeypatch.setenv(atomic.FAULT_ENV, f"{action}@{atomic.write_count() + nth}")

    return arm


def test_disk_full_names_the_path_and_space_and_keeps_the_old_file(tmp_path: Path, fault) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "metrics.parquet"
    atomic_write_bytes(path, b"old")
    fault("enospc")
    with pytest.raises(DiskFull) as info:
        atomic_write_bytes(path, b"x" * 5000)
    message = str(info.value)
    assert str(path) in message and "4.9 KB" in message and "available" in message
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.parquet"]  # no temporary left


def test_quota_and_interrupt_faults_leave_no_temporary(tmp_path: Path, fault) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yaml"
    fault("edquot")
    with pytest.raises(DiskFull, match="quota"):
        atomic_write_bytes(path, b"data")
    fault("interrupt")
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"data")
    assert list(tmp_path.iterdir()) == []


def test_kill_fault_leaves_the_old_file_and_a_temporary(tmp_path: Path) -> None:
    path = tmp_path / "metrics.parquet"
    path.write_bytes(b"old")
    code = (
        "import sys; from pathlib import Path; from ncrobust.atomic import atomic_write_bytes; "
        "atomic_write_bytes(Path(sys.argv[1]), b'new' * 100)"
    )
    env = {**os.environ, atomic.FAULT_ENV: "kill@1"}
    proc = subprocess.run([sys.executable, "-c", code, str(path)], env=env, check=False)
    assert proc.returncode == -9  # SIGKILL, half-way through the write
    assert path.read_bytes() == b"old"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "metrics.parquet"]
    assert len(leftovers) == 1 and is_temporary(leftovers[0])
    assert RunDirectory(tmp_path).remove_temporaries() == [tmp_path / leftovers[0]]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.parquet"]


def test_only_ncrobust_temporaries_are_recognised() -> None:
    assert is_temporary(".config.yaml.ab12_x9z.tmp")
    assert is_temporary(".epoch-0004.safetensors.0123abcd.tmp")
    assert not is_temporary(".notes.txt.ab12_x9z.tmp")  # not a file ncrobust writes
    assert not is_temporary("config.yaml.tmp")
    assert not is_temporary(".config.yaml.tmp")


def test_bad_fault_spec_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(atomic.FAULT_ENV, "explode@1")
    with pytest.raises(UsageError, match="NCROBUST_FAULT"):
        atomic_write_bytes(tmp_path / "DONE", b"1")


def test_parquet_and_copy_and_log_go_through_the_one_writer(tmp_path: Path, fault) -> None:  # type: ignore[no-untyped-def]
    frame = pd.DataFrame({"a": [1, 2]})
    before = atomic.write_count()
    atomic_write_parquet(frame, tmp_path / "t.parquet")
    atomic_copy(tmp_path / "t.parquet", tmp_path / "u.parquet")
    append_line(tmp_path / "log.txt", "one")
    assert atomic.write_count() == before + 3
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "u.parquet"), frame)
    source = tmp_path / "t.parquet"
    assert os.stat(tmp_path / "u.parquet").st_ino == source.stat().st_ino  # a hard link
    fault("enospc")
    with pytest.raises(DiskFull, match=r"epoch-0002\.safetensors"):
        atomic_copy(source, tmp_path / "epoch-0002.safetensors")
    assert not (tmp_path / "epoch-0002.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "t.parquet", "u.parquet"]


def test_copy_without_hard_links_is_still_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EPERM, "no links here")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "a").write_bytes(b"payload")
    atomic_copy(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"payload"
    assert os.stat(tmp_path / "b").st_ino != os.stat(tmp_path / "a").st_ino


def test_a_torn_log_line_is_closed_by_the_next_append(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_bytes(b"epoch 1 ok\nepoch 2 lo")  # a kill in the middle of an append
    append_line(log, "resumed at epoch 1")
    assert log.read_text().splitlines() == ["epoch 1 ok", "epoch 2 lo", "resumed at epoch 1"]


def _config_text() -> str:
    return "dataset: digits\nmodel: small_cnn\n"


def test_claim_uses_an_empty_directory_as_it_is(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir(mode=0o750)
    os.chmod(out, 0o750)
    inode = out.stat().st_ino
    (out / ".config.yaml.abcdefgh.tmp").write_text("dat")  # a kill during config.yaml
    held = claim(out, resume=False, overwrite=False, checkpoint="last.safetensors")
    assert held.state == "new" and not held.created
    held.release()
    assert out.stat().st_ino == inode and (out.stat().st_mode & 0o777) == 0o750


def test_claim_refuses_foreign_directories_even_with_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "important.txt").write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(UsageError, match="important.txt" if overwrite else "not empty"):
            claim(out, resume=False, overwrite=overwrite, checkpoint="last.safetensors")
    assert (out / "important.txt").read_text() == "keep"
    (out / "config.yaml").write_text("not: [ours")  # a config.yaml, but not ncrobust's
    with pytest.raises(UsageError, match=r"no ncrobust config\.yaml"):
        claim(out, resume=False, overwrite=True, checkpoint="last.safetensors")


def test_clear_deletes_only_what_ncrobust_wrote(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = RunDirectory(out)
    out.mkdir()
    run.begin(fresh=True)
    run.record(run.config_path)
    run.config_path.write_text(_config_text())
    run.log("hello")
    for name in ("last.safetensors", "epoch-0002.safetensors"):
        run.record(run.checkpoint_dir / name)
        atomic_write_bytes(run.checkpoint_dir / name, b"x")
    # files of ncrobust's own names that ncrobust did not write: a user's
    atomic_write_bytes(run.checkpoint_dir / "epoch-0099.safetensors", b"mine")
    (out / "robustness.parquet").write_text("mine")
    (run.checkpoint_dir / "my-notes.txt").write_text("mine")
    (out / "analysis.ipynb").write_text("mine")
    held = claim(out, resume=False, overwrite=True, checkpoint="last.safetensors")
    assert held.state == "replace"
    run.clear()
    held.release()
    assert sorted(p.name for p in out.iterdir()) == [
        ".lock",
        "analysis.ipynb",
        "checkpoints",
        "robustness.parquet",
    ]
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == [
        "epoch-0099.safetensors",
        "my-notes.txt",
    ]


def test_clear_of_a_run_without_manifest_deletes_own_names_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    run = RunDirectory(out)
    out.mkdir()
    run.config_path.write_text(_config_text())
    atomic_write_bytes(run.checkpoint_dir / "last.safetensors", b"x")
    (out / "analysis.ipynb").write_text("mine")
    run.clear()
    assert "no record of the files ncrobust wrote" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["analysis.ipynb"]


def test_a_damaged_manifest_reaches_nothing_outside_the_run(tmp_path: Path) -> None:
    outside = tmp_path / "config.yaml"
    outside.write_text("precious")
    out = tmp_path / "run"
    run = RunDirectory(out)
    out.mkdir()
    run.manifest_path.write_text('{"run_id": "x", "files": ["../config.yaml", "/etc/passwd"]}')
    run.clear()
    assert outside.read_text() == "precious"


@pytest.mark.parametrize(
    "entry", ["log.txt", "checkpoints", "tensorboard", ".lock", "checkpoints/last.safetensors"]
)
def test_symlinked_entries_are_refused_and_never_written_through(
    tmp_path: Path, entry: str
) -> None:
    target = tmp_path / "victim"
    target.mkdir()
    (target / "file").write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(_config_text())
    link = out / entry
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(target / "file" if entry in ("log.txt", ".lock") or "/" in entry else target)
    for resume, overwrite in ((True, False), (False, True)):
        with pytest.raises(UsageError, match=f"symbolic links where ncrobust writes.*{entry}"):
            claim(out, resume=resume, overwrite=overwrite, checkpoint="last.safetensors")
    assert sorted(p.name for p in target.iterdir()) == ["file"]
    assert (target / "file").read_text() == "precious"


def test_log_and_lock_never_write_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.txt").symlink_to(victim)
    with pytest.raises(OSError):
        RunDirectory(out).log("line")
    (out / ".lock").symlink_to(victim)
    with pytest.raises(UsageError, match=r"\.lock is a symbolic link or not a file"):
        RunLock(out).acquire()
    assert victim.read_text() == "precious"


def test_claim_follows_a_symlinked_out(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    held = claim(link, resume=False, overwrite=False, checkpoint="last.safetensors")
    held.release()
    assert link.is_symlink() and (target / ".lock").exists()


def test_abandoned_claim_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "fresh"
    held = claim(out, resume=False, overwrite=False, checkpoint="last.safetensors")
    assert held.created and (out / ".lock").exists()
    held.abandon()
    assert not out.exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: (p / "file").write_text("x") and p / "file" / "run", "not a directory"),
        (lambda p: p / ("n" * 300), "too long"),
    ],
)
def test_out_problems_are_one_usage_error(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    out = make(tmp_path)
    with pytest.raises(UsageError, match=message):
        claim(out, resume=False, overwrite=False, checkpoint="last.safetensors")


def test_read_only_file_system_is_one_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mkdir = Path.mkdir

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        if self.name == "ro":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(UsageError, match="ro as a run directory: the file system is read-only"):
        claim(tmp_path / "ro", resume=False, overwrite=False, checkpoint="last.safetensors")
