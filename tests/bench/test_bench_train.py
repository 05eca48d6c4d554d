"""bench train runs end to end in its quick form and reports ratios and the measurement share."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ncrobust.cli import main
from ncrobust.experiments.grids import read_rates


def test_quick_bench_train_reports_every_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rates_file = tmp_path / "rates.json"
    assert main(["bench", "train", "--quick", "--write-rates", str(rates_file)]) == 0
    out = capsys.readouterr().out
    rates = read_rates(rates_file)  # what sweep --dry-run --rates reads
    assert set(rates.train["small_cnn"]) == {"st", "at", "trades"}
    ours = re.search(r"small_cnn\s+at\s+train: ours\s+([0-9.]+)", out)
    assert ours and rates.train["small_cnn"]["at"] == pytest.approx(float(ours.group(1)), abs=0.06)
    assert json.loads(rates_file.read_text())["steps"] == 2
    for mode in ("st", "at", "trades"):
        line = next(row for row in out.splitlines() if re.search(rf"\b{mode}\s+train:", row))
        ratio = float(re.search(r"ratio\s+([0-9.]+)x", line).group(1))  # type: ignore[union-attr]
        assert ratio > 0
    assert "measure" in out and "share when measuring every 5 epochs" in out
