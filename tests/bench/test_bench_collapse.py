"""Smoke test of ``ncrobust bench collapse --quick``."""

from __future__ import annotations

import re

import pytest

from ncrobust.cli import main


def test_quick_benchmark_runs_and_reports_a_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "collapse", "--quick", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"speed ratio \(extrapolated baseline / ours\): [0-9.]+x", out)
    assert re.search(r"max relative difference [0-9.e+-]+ vs the baseline in float64", out)
    assert "baseline skipped" in out  # the wide case says why
    included = re.search(r"time includes (\d+) measures: (.+?) \(and the per-class", out)
    assert included is not None
    names = included.group(2).split(", ")
    assert len(names) == int(included.group(1))
    assert {"nc1", "cdnv", "etf_error", "nc1_trace_ratio", "nc4", "unc3"} <= set(names)
    assert re.search(r"the baseline computes 7 of them: nc1, ", out)


def test_bad_sizes_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "collapse", "--classes", "10,x"]) == 2
    assert "--classes" in capsys.readouterr().err
    assert main(["bench", "collapse", "--classes", "1"]) == 2


def test_cpu_clock_is_named_and_unknown_clocks_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["bench", "collapse", "--quick", "--threads", "1"]
    assert main([*args, "--clock", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "cpu clock" in out.splitlines()[0]
    assert re.search(r"speed ratio \(extrapolated baseline / ours\): [0-9.]+x", out)
    assert main([*args, "--clock", "sundial"]) == 2
    assert "invalid choice: 'sundial'" in capsys.readouterr().err
