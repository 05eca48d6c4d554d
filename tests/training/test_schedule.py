"""The paper's per-iteration piecewise learning rate."""

import pytest

from ncrobust.training import piecewise_lr


def test_drops_at_the_papers_epochs() -> None:
    def lr(progress: float) -> float:
        return piecewise_lr(progress, 400, 0.1, [0.25, 0.375], 0.1)

    assert lr(0.01) == pytest.approx(0.1)
    assert lr(99.99) == pytest.approx(0.1)
    assert lr(100.0) == pytest.approx(0.01)  # epoch 100 of 400
    assert lr(149.9) == pytest.approx(0.01)
    assert lr(150.0) == pytest.approx(0.001)  # epoch 150 of 400
    assert lr(400.0) == pytest.approx(0.001)


def test_no_milestones_keeps_the_rate() -> None:
    assert piecewise_lr(5.0, 10, 0.3, [], 0.1) == 0.3
