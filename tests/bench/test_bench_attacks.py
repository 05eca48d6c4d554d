"""`ncrobust bench attacks`: smoke run, flag errors, and both timed paths doing the same attack."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from ncrobust.attacks import pgd
from ncrobust.bench.attacks import released_style_pgd, summarise
from ncrobust.cli import main


def test_quick_run_prints_a_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "attacks", "--quick"]) == 0
    out = capsys.readouterr().out
    row = re.search(r"^small_cnn\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+\d+%$", out, re.MULTILINE)
    assert row is not None, out
    baseline, fast, ratio = map(float, row.groups())
    assert baseline > 0 and fast > 0
    assert ratio == pytest.approx(fast / baseline, rel=0.01, abs=0.01)


def test_rates_come_from_the_median_batch_time() -> None:
    result = summarise([2.0, 10.0, 2.2], [1.0, 1.1, 1.0], batch_size=100)
    assert result.baseline_rate == pytest.approx(100 / 2.2)  # the 10 s outlier is ignored
    assert result.fast_rate == pytest.approx(100 / 1.0)
    assert result.ratio == pytest.approx(2.2)
    assert result.spread == pytest.approx((10.0 - 2.0) / 2.2)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--batches", "0"], "--batches must be >= 1"),
        (["--models", "no_such_net"], "unknown model"),
        (["--device", "cuda:99"], "cuda:99"),
    ],
)
def test_bad_flags_exit_2_with_a_message(flags, message, capsys) -> None:
    if message == "cuda:99" and torch.cuda.device_count() > 99:  # pragma: no cover
        pytest.skip("a machine with 100 GPUs")
    assert main(["bench", "attacks", *flags]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("norm", "eps", "alpha"), [("linf", 8 / 255, 2 / 255), ("l2", 0.5, 0.1)])
def test_baseline_computes_the_same_attack_as_pgd(norm, eps, alpha) -> None:
    """The benchmark compares like with like: from the same global RNG state the released-style
    loop and pgd give the same adversarial examples (l_2: renorm's 1e-7 guard aside)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    ).double()
    x = torch.rand(16, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 10, (16,))
    torch.manual_seed(1)
    baseline = x + released_style_pgd(model, x, y, norm=norm, eps=eps, alpha=alpha, steps=5)
    assert all(p.grad is not None for p in model.parameters())  # the baseline's cost is real
    torch.manual_seed(1)
    ours = pgd(model, x, y, norm=norm, eps=eps, alpha=alpha, steps=5)
    torch.testing.assert_close(ours, baseline, atol=1e-5, rtol=0)
    delta = (ours - x).flatten(1)
    assert float((delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)).max()) > eps / 2
