"""bench pack: K concurrent CPU worker processes, the aggregate, the best K and its factor."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ncrobust.bench.pack import parse_counts
from ncrobust.cli import main
from ncrobust.errors import UsageError
from ncrobust.experiments.grids import read_rates


def test_quick_pack_on_cpu_processes_names_the_best_k_and_writes_the_factor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rates = tmp_path / "rates.json"
    rates.write_text(
        json.dumps(
            {"device": "cpu", "image_size": 32, "steps": 2,
             "train": {"small_cnn": {"st": 100.0, "at": 30.0}}, "measure": {"small_cnn": 200.0}}
        )
    )  # fmt: skip
    args = ["bench", "pack", "--quick", "--device", "cpu", "--counts", "1,2"]
    assert main([*args, "--write-rates", str(rates)]) == 0
    out = capsys.readouterr().out
    aggregate = {
        int(k): float(v) for k, v in re.findall(r"K=(\d+): aggregate\s+([0-9.]+) img/s", out)
    }
    assert set(aggregate) == {1, 2} and all(v > 0 for v in aggregate.values())
    best = int(re.search(r"best K: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert aggregate[best] == max(aggregate.values())
    assert "released-style loop, one run:" in out
    packing = read_rates(rates).packing
    assert packing is not None and packing["runs_per_gpu"] == best
    assert packing["throughput_factor"] == pytest.approx(aggregate[best] / aggregate[1], rel=0.01)


def test_bad_counts_are_refused() -> None:
    assert parse_counts("8,1,2,2") == [1, 2, 8]
    for text in ("", "0,1", "two"):
        with pytest.raises(UsageError, match="--counts expects integers"):
            parse_counts(text)
