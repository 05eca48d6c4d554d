"""``scripts/stress_resume.sh``: SIGKILLs at random writes and times, resumed to identical files;
deleted and stale tables and a foreign checkpoint refused, a missing last checkpoint resumed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "stress_resume.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_stress_resume_with_two_kills(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "SEED": "5", "EPOCHS": "1"}
    env.pop("NCROBUST_FAULT", None)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "2", str(tmp_path / "work")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=500,  # within pytest's own limit, so that a hang fails here with the output
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kill 1: SIGKILL during file write" in proc.stdout
    assert "identical:" in proc.stdout and "identical to the uninterrupted one" in proc.stdout
    for how, why in (
        ("deleted-stats", "attack_stats.parquet is missing"),
        ("stale-stats", "attack_stats.parquet holds"),
        ("stale-metrics", "metrics.parquet holds no rows of epoch"),
        ("foreign-checkpoint", "run id another-run"),
    ):
        assert f"damage {how}: refused: " in proc.stdout and why in proc.stdout, proc.stdout
    assert "damage missing-last: resumed from the kept checkpoint" in proc.stdout
