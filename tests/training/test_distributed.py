"""One run on two processes (torchrun, gloo on the CPU) against the same run in one process."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ncrobust.attacks.ball import Ball, random_offsets
from ncrobust.cli import main
from ncrobust.config import read_config
from ncrobust.data.batching import shard_rows
from ncrobust.distributed import draw_rows
from ncrobust.runs.checkpoint import LAST, load_checkpoint
from ncrobust.runs.directory import RunDirectory
from ncrobust.runtime import make_generator

WORKER = Path(__file__).with_name("_distributed_worker.py")
MODES = ("st", "at", "trades")
TIMINGS = {"seconds", "measure_seconds"}
KEYS = ["epoch", "split", "view", "layer", "metric"]
STAT_KEYS = ["epoch", "split", "view", "layer", "class", "statistic"]

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not sys.platform.startswith("linux"),
    reason="needs torch.distributed (gloo) and /proc",
)


def _worker_args(mode: str | None = None) -> list[str]:
    """The worker's exact run settings (of ``mode``)."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        from _distributed_worker import MODE_ARGS, RUN_ARGS
    finally:
        sys.path.pop(0)
    return [*RUN_ARGS, *(MODE_ARGS[mode] if mode else [])]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(*args: str, nproc: int = 2) -> subprocess.Popen[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", NCROBUST_OFFLINE="1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *args,
    ]  # fmt: skip
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


# Two runs that differ from the one-process run only by roundings, as the two-process run's
# reordered gradient sums do: the same run on 2 threads instead of 1 (sums split another way),
# and the same run with its learning rate one float32 ulp larger (every update rounded another
# way; on a single step, as TRADES here, the thread count may change nothing, or the nudge).
# How far training carries such differences, measured here on this machine, scales what the
# two-process run may differ by.
NUDGED_LR = float(np.nextafter(np.float32(0.05), np.float32(1)))
NOISE_FACTOR = 10.0  # the two-process difference may reach this many times the measured noise


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """ROOT/runs/<mode> trained by 2 processes (see the worker), ROOT/one/<mode> by this one,
    ROOT/nudged/<mode> by this one with the learning rate one float32 ulp larger and
    ROOT/threads/<mode> by this one on 2 threads."""
    root = tmp_path_factory.mktemp("ddp")
    worker = _torchrun(str(WORKER), str(root))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker rank
    try:
        for mode in MODES:  # while the workers run
            out = str(root / "one" / mode)
            assert main(["train", *_worker_args(mode), "--out", out]) == 0
            nudged = ["--lr", repr(NUDGED_LR), "--out", str(root / "nudged" / mode)]
            assert main(["train", *_worker_args(mode), *nudged]) == 0
            torch.set_num_threads(2)
            assert main(["train", *_worker_args(mode), "--out", str(root / "threads" / mode)]) == 0
            torch.set_num_threads(1)
    finally:
        torch.set_num_threads(threads)
    output, _ = worker.communicate(timeout=600)
    assert worker.returncode == 0, output
    yield root


def _close(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], rtol: float) -> None:
    """Same rows (keys) and values within ``rtol`` (relative to max(1, |value|))."""
    a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[keys], b[keys])
    x, y = a.value.to_numpy(), b.value.to_numpy()
    both_nan = np.isnan(x) & np.isnan(y)
    scale = np.maximum(1.0, np.abs(y))
    error = np.where(both_nan, 0.0, np.abs(x - y) / scale)
    worst = int(np.nanargmax(error))
    assert error[worst] <= rtol, (a.iloc[worst].to_dict(), y[worst], error[worst])


def _metrics(run: Path) -> pd.DataFrame:
    table = RunDirectory(run).read_metrics()
    return table[~table.metric.isin(TIMINGS)]


# Views made by PGD's sign(gradient) steps are not continuous in the parameters: once training
# has left parameters that agree to ~1e-8 (not bitwise: the gradient sums run in another
# order), a few pixels move by 2·alpha the other way. One process on 1 vs 2 threads differs
# as much (~1e-3 on these views), so they are held to 1e-2 after training; at epoch 0
# (identical parameters) and on every other view the tables agree to 1e-9 and 1e-6.
SIGN_VIEWS = ["pgd", "targeted", "train_adv"]


def _same_run(two: pd.DataFrame, one: pd.DataFrame, keys: list[str]) -> None:
    start = two.epoch == 0
    _close(two[start], one[one.epoch == 0], keys, 1e-9)
    smooth_two, smooth_one = ~two.view.isin(SIGN_VIEWS), ~one.view.isin(SIGN_VIEWS)
    _close(two[smooth_two], one[smooth_one], keys, 1e-6)
    _close(two[~smooth_two], one[~smooth_one], keys, 1e-2)


def _parameter_difference(two: Path, one: Path) -> float:
    """Largest relative difference between the last checkpoints' floating-point tensors (the
    whole state's norm, and each tensor's max on a scale of at least 1e-2: biases start at 0);
    the integer buffers must be equal."""
    a = load_checkpoint(two / "checkpoints" / LAST).model_state
    b = load_checkpoint(one / "checkpoints" / LAST).model_state
    assert a.keys() == b.keys()
    floats = [name for name, value in b.items() if value.is_floating_point()]
    for name in set(b) - set(floats):
        assert torch.equal(a[name], b[name]), name
    difference = torch.cat([(a[name] - b[name]).flatten() for name in floats]).norm()
    errors = [(difference / torch.cat([b[name].flatten() for name in floats]).norm()).item()]
    for name in floats:
        scale = max(b[name].abs().max().item(), 1e-2)
        errors.append((a[name] - b[name]).abs().max().item() / scale)
    return max(errors)


def test_shards_are_disjoint_and_cover_every_batch() -> None:
    for total in (1, 2, 13, 128):
        for world in (1, 2, 3, 8):
            rows = [shard_rows(total, rank, world) for rank in range(world)]
            assert rows[0][0] == 0 and rows[-1][1] == total
            assert all(a[1] == b[0] for a, b in itertools.pairwise(rows))
            assert max(b - a for a, b in rows) - min(b - a for a, b in rows) <= 1


def test_random_starts_are_drawn_for_the_global_batch() -> None:
    x = torch.rand(7, 1, 4, 4)
    for norm in ("linf", "l2"):

        def offsets(t: torch.Tensor, norm: str = norm) -> torch.Tensor:
            return random_offsets(t, norm, 0.1, make_generator(3))

        whole = draw_rows(x, None, offsets)
        parts = [
            draw_rows(x[a:b], (a, b, 7), offsets) for a, b in (shard_rows(7, r, 2) for r in (0, 1))
        ]
        assert torch.equal(torch.cat(parts), whole)
        # one process's start is the attack's own random start
        assert torch.equal(
            (x + whole).clamp(0, 1), Ball(x, norm, 0.1).random_start(make_generator(3))
        )


@pytest.mark.parametrize(
    ("world", "batch", "message"),
    [
        (2, "127", "batch_size 127 (the global batch) is not divisible by the 2 processes"),
        (4, "1436", "the last batch of each epoch (1 of 1437 samples) is smaller than the 4"),
    ],
)
def test_batches_that_cannot_be_shared_are_refused_before_anything_runs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    world: int,
    batch: str,
    message: str,
) -> None:
    for name, value in (("RANK", "0"), ("WORLD_SIZE", str(world)), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    out = tmp_path / "run"
    assert main(["train", *_worker_args(), "--batch-size", batch, "--out", str(out)]) == 2
    assert f"rank 0 of {world}: error: {message}" in capsys.readouterr().err
    assert not out.exists() and not torch.distributed.is_initialized()


def test_sync_batchnorm_equals_batchnorm_of_the_global_batch(runs: Path) -> None:
    for rank in (0, 1):
        errors = json.loads((runs / f"syncbn-{rank}.json").read_text())
        assert errors["output"] < 1e-5 and errors["input_grad"] < 1e-5, errors
        assert errors["param_grad"] < 1e-4 and errors["buffers"] < 1e-6, errors


def _drift(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], floats: list[str]
) -> tuple[float, float]:
    """(norm of a - b relative to b's, largest per-tensor max |a - b| relative to its scale)."""
    norm = torch.cat([(a[n] - b[n]).flatten() for n in floats]).norm()
    relative_norm = (norm / torch.cat([b[n].flatten() for n in floats]).norm()).item()
    worst = max((a[n] - b[n]).abs().max().item() / _scale(b[n]) for n in floats)
    return relative_norm, worst


def _scale(tensor: torch.Tensor) -> float:
    return max(tensor.abs().max().item(), 1e-2)  # biases start at 0: a scale of at least 1e-2


@pytest.mark.parametrize("mode", MODES)
def test_two_processes_follow_the_one_process_run(runs: Path, mode: str) -> None:
    two, one = runs / "runs" / mode, runs / "one" / mode
    a = load_checkpoint(two / "checkpoints" / LAST).model_state
    b = load_checkpoint(one / "checkpoints" / LAST).model_state
    assert a.keys() == b.keys()
    floats = [name for name, value in b.items() if value.is_floating_point()]
    # the tolerance is the measured noise: how far roundings carry in this run
    drifts = [
        _drift(load_checkpoint(runs / kind / mode / "checkpoints" / LAST).model_state, b, floats)
        for kind in ("nudged", "threads")
    ]
    noise_norm, noise_worst = (max(values) for values in zip(*drifts, strict=True))
    ulp = float(np.finfo(np.float32).eps)
    assert noise_norm > 0  # a rounding changed the run: the noise was measured
    difference_norm, _ = _drift(a, b, floats)
    assert difference_norm <= NOISE_FACTOR * max(noise_norm, ulp), (difference_norm, noise_norm)
    allowed = NOISE_FACTOR * max(noise_worst, ulp)
    for name in floats:
        error = (a[name] - b[name]).abs().max().item() / _scale(b[name])
        assert error <= allowed, (name, error, noise_worst)
    for name in set(b) - set(floats):
        assert torch.equal(a[name], b[name]), name
    _same_run(_metrics(two), _metrics(one), KEYS)
    _same_run(RunDirectory(two).read_stats(), RunDirectory(one).read_stats(), STAT_KEYS)
    config = read_config(two / "config.yaml")
    assert config.world_size == 2 and config.sync_bn
    assert read_config(one / "config.yaml").world_size == 1
    log = (two / "log.txt").read_text()
    host = socket.gethostname()
    assert f"rank 0: {host}/cpu" in log and f"rank 1: {host}/cpu" in log


def test_per_process_batchnorm_is_another_protocol(runs: Path) -> None:
    # --no-sync-bn: each process normalises by the statistics of its half of the batch, so the
    # run leaves the one-process trajectory at the first step (~2e-2 here), by design
    local = runs / "runs" / "st_local"
    assert not read_config(local / "config.yaml").sync_bn
    assert "per-process BatchNorm" in (local / "log.txt").read_text()
    assert 1e-3 < _parameter_difference(local, runs / "one" / "st") < 0.5


def test_only_rank_zero_writes(runs: Path) -> None:
    rank0 = json.loads((runs / "writes-0.json").read_text())
    rank1 = json.loads((runs / "writes-1.json").read_text())
    assert any("metrics.parquet" in w for w in rank0)  # the audit sees the writes
    assert any("last.safetensors" in w for w in rank0)
    assert rank1 == []


def test_two_process_measure_equals_one_process(runs: Path, tmp_path: Path) -> None:
    copy = tmp_path / "st"
    shutil.copytree(runs / "runs" / "st", copy)
    (copy / "measurements.parquet").unlink()
    (copy / "measurement_stats.parquet").unlink()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["measure", str(copy), "--views", "clean,pgd,gaussian,targeted"]) == 0
    finally:
        torch.set_num_threads(threads)
    two = pd.read_parquet(runs / "runs" / "st" / "measurements.parquet")
    one = pd.read_parquet(copy / "measurements.parquet")
    assert {"pgd", "gaussian", "targeted"} <= set(one.view)
    _close(two, one, KEYS, 1e-9)
    two_stats = pd.read_parquet(runs / "runs" / "st" / "measurement_stats.parquet")
    _close(two_stats, pd.read_parquet(copy / "measurement_stats.parquet"), STAT_KEYS, 1e-9)


def test_two_process_run_resumes_with_one(runs: Path) -> None:
    out = runs / "runs" / "at_resume"
    assert not RunDirectory(out).is_complete()
    assert read_config(out / "config.yaml").world_size == 2
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert RunDirectory(out).is_complete()
    _same_run(_metrics(out), _metrics(runs / "one" / "at"), KEYS)
    assert read_config(out / "config.yaml").world_size == 1
    assert "world_size 2 -> 1" in (out / "log.txt").read_text()


def test_indivisible_global_batch_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "odd"
    job = _torchrun("-m", "ncrobust", "train", *_worker_args(), "--batch-size", "127",
                    "--epochs", "1", "--out", str(out))  # fmt: skip
    output, _ = job.communicate(timeout=300)
    assert job.returncode != 0
    assert "batch_size 127 (the global batch) is not divisible by the 2 processes" in output
    assert "rank 0 of 2" in output
    assert not out.exists()


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the worker with ``RANK=rank`` among ``parent``'s children (from /proc)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
            if int(fields.get("PPid", "0")) != parent:
                continue
            environ = (status.parent / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(status.parent.name)
    return None


def test_killed_rank_stops_the_job_and_the_run_resumes(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    job = _torchrun("-m", "ncrobust", "train", *_worker_args(), "--mode", "at", "--epochs", "4",
                    "--measure-every", "1",
                    "--out", str(out))  # fmt: skip
    log = out / "log.txt"
    deadline = time.monotonic() + 300
    while not (log.is_file() and "epoch 1/4" in log.read_text()):
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[0]
        time.sleep(0.2)
    # deterministic: rank 0 is held still, so the run cannot finish before rank 1 is killed
    main_pid, pid = _rank_pid(job.pid, 0), _rank_pid(job.pid, 1)
    assert main_pid is not None and pid is not None
    os.kill(main_pid, signal.SIGSTOP)
    try:
        os.kill(pid, signal.SIGKILL)
    finally:
        os.kill(main_pid, signal.SIGCONT)
    output, _ = job.communicate(timeout=300)
    assert job.returncode != 0
    assert "rank: 1" in output and "SIGKILL" in output, output
    run = RunDirectory(out)
    assert not run.is_complete()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    table = run.read_metrics()
    assert not table.duplicated(KEYS).any()
    fit = table[table.view == "fit"]
    assert sorted(fit.epoch.unique()) == [1, 2, 3, 4]
    assert sorted(table[table.view != "fit"].epoch.unique()) == [0, 1, 2, 3, 4]
    assert not run.read_stats().duplicated(STAT_KEYS).any()
