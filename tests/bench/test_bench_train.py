"""bench train runs end to end in its quick form and reports ratios and the measurement share."""

from __future__ import annotations

import re

import pytest

from ncrobust.cli import main


def test_quick_bench_train_reports_every_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "train", "--quick"]) == 0
    out = capsys.readouterr().out
    for mode in ("st", "at", "trades"):
        line = next(row for row in out.splitlines() if re.search(rf"\b{mode}\s+train:", row))
        ratio = float(re.search(r"ratio\s+([0-9.]+)x", line).group(1))  # type: ignore[union-attr]
        assert ratio > 0
    assert "measure" in out and "share when measuring every 5 epochs" in out
