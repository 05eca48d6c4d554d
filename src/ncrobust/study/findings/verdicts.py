"""Verdicts and the comparisons behind them: a :class:`Finding` is a list of :class:`Check`.

A finding *holds* when every check passes, *does not hold* when one fails, is *inconclusive*
when a precondition of the claim (not the claim itself) is not met — the attack missed its
targets, the run is not in its terminal phase, too few layers — and *not measured* when data
is missing. Each outcome carries its reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Verdict(str, Enum):
    HOLDS = "holds"
    FAILS = "does not hold"
    INCONCLUSIVE = "inconclusive"
    NOT_MEASURED = "not measured"


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
}


@dataclass(frozen=True)
class Check:
    """One comparison ``value <op> threshold`` behind a verdict."""

    quantity: str
    value: float
    op: str
    threshold: float
    threshold_name: str

    @property
    def measured(self) -> bool:
        return math.isfinite(self.value)

    @property
    def passed(self) -> bool:
        return self.measured and _COMPARE[self.op](self.value, self.threshold)

    def describe(self) -> str:
        return f"{self.quantity} {self.op} {self.threshold:g} ({self.threshold_name})"

    def shortfall(self) -> str:
        """``quantity = value, needs op threshold (name)``: why a precondition is not met."""
        return (
            f"{self.quantity} = {self.value:.4g}, needs {self.describe()[len(self.quantity) + 1 :]}"
        )


@dataclass(frozen=True)
class Finding:
    """The outcome of one paper finding on one run group (or pair of groups)."""

    key: str
    claim: str
    runs: str
    epoch: int | None = None
    checks: tuple[Check, ...] = ()
    context: tuple[tuple[str, float], ...] = ()  # further measured numbers shown with it
    missing: str = ""  # why it was not measured
    preconditions: tuple[Check, ...] = ()  # what the claim presumes (else: inconclusive)
    notes: tuple[str, ...] = ()  # how the numbers were read (e.g. which view, which baseline)

    @property
    def verdict(self) -> Verdict:
        if self.missing or not self.checks:
            return Verdict.NOT_MEASURED
        if any(p.measured and not p.passed for p in self.preconditions):
            return Verdict.INCONCLUSIVE
        if any(not c.measured for c in (*self.preconditions, *self.checks)):
            return Verdict.NOT_MEASURED
        return Verdict.HOLDS if all(c.passed for c in self.checks) else Verdict.FAILS

    @property
    def reason(self) -> str:
        """Why the finding is inconclusive or not measured ('' when it is decided)."""
        if self.missing:
            return self.missing
        unmet = [p.shortfall() for p in self.preconditions if p.measured and not p.passed]
        if unmet:
            return "precondition not met: " + "; ".join(unmet)
        unmeasured = [c.quantity for c in (*self.preconditions, *self.checks) if not c.measured]
        return f"not measured: {', '.join(unmeasured)}" if unmeasured else ""

    def measured(self) -> list[tuple[str, float]]:
        """Every number behind the verdict: context, preconditions, then each check's value."""
        return [
            *self.context,
            *((p.quantity, p.value) for p in self.preconditions),
            *((c.quantity, c.value) for c in self.checks),
        ]
