"""The paper's piecewise learning rate, set per iteration."""

from __future__ import annotations

from collections.abc import Sequence


def piecewise_lr(
    progress: float, epochs: int, base_lr: float, milestones: Sequence[float], gamma: float
) -> float:
    """Learning rate at ``progress`` epochs into a run of ``epochs``.

    ``progress`` is fractional (epoch + (i + 1) / batches, as the released code), and each
    milestone is a fraction of the run at which the rate is multiplied by ``gamma`` (the paper:
    0.1 at 25 % and 37.5 %, i.e. epochs 100 and 150 of 400).
    """
    fraction = progress / epochs
    drops = sum(1 for m in milestones if fraction >= m)
    return base_lr * gamma**drops
