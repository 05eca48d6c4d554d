"""CUDA runs (marked ``gpu``: skipped without CUDA; ``scripts/gpu_check.sh`` runs them).

A CUDA run killed after its first checkpoint and resumed under ``--deterministic`` writes the
tables and checkpoints of the uninterrupted run bit for bit; the CPU and CUDA epochs of the
data pipeline are identical (tests/data/test_batching.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from ncrobust import atomic
from ncrobust.runs.checkpoint import LAST, load_checkpoint
from ncrobust.runs.directory import RunDirectory

pytestmark = pytest.mark.gpu

# writes (as tests/training/test_reliability.py): 1 config.yaml, 2 log, 3 metrics (epoch 0),
# 4 last, 5 epoch-0000, 6 metrics (epoch 1), 7 last, 8 epoch-0001: a kill at the 8th write
# stops the run after its first epoch's checkpoint. The AT attack's random starts and the
# augmentation draw on every epoch.
ARGS = [
    "--dataset", "digits", "--model", "small_cnn", "--mode", "at", "--steps", "2",
    "--eps", "0.15", "--alpha", "0.05", "--epochs", "3", "--measure-every", "1",
    "--checkpoint-every", "1", "--views", "clean", "--device", "cuda",
    "--augment", "--deterministic", "--quiet",
]  # fmt: skip
TIMINGS = {"seconds", "measure_seconds"}


def _cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != atomic.FAULT_ENV}
    env.update({atomic.FAULT_ENV: fault} if fault else {})
    command = [sys.executable, "-m", "ncrobust.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_a_killed_cuda_run_resumes_bitwise_under_deterministic(tmp_path: Path) -> None:
    compile_flag = "--no-compile"  # eager: compilation would take most of the GPU check's time
    reference, out = tmp_path / "reference", tmp_path / "run"
    done = _cli("train", *ARGS, compile_flag, "--out", str(reference))
    assert done.returncode == 0, done.stderr
    killed = _cli("train", *ARGS, compile_flag, "--out", str(out), fault="kill@8")
    assert killed.returncode == -9, killed.stderr
    assert load_checkpoint(out / "checkpoints" / LAST).epoch == 1
    assert load_checkpoint(out / "checkpoints" / LAST).cuda_rng_states  # CUDA generators kept
    resumed = _cli("train", "--resume", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr

    def table(path: Path) -> pd.DataFrame:
        frame = RunDirectory(path).read_metrics()
        frame = frame[~frame.metric.isin(TIMINGS)]
        keys = ["epoch", "split", "view", "layer", "metric"]
        return frame.sort_values(keys).reset_index(drop=True)

    pd.testing.assert_frame_equal(table(reference), table(out), check_exact=True)
    names = sorted(p.name for p in (reference / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (out / "checkpoints").iterdir())
    for name in names:
        a = load_file(str(reference / "checkpoints" / name))
        b = load_file(str(out / "checkpoints" / name))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), name
