"""Verdicts and the comparisons behind them: a :class:`Finding` is a list of :class:`Check`.

A finding *holds* when every check passes, *does not hold* when one fails, is *inconclusive*
when a precondition of the claim (not the claim itself) is not met — the attack missed its
targets, the run is not in its terminal phase, too few layers — and *not measured* when data
is missing. Each outcome carries its reason.

With several seeds each check also carries the 95 % t interval of its per-seed values (centred
on the seed-mean value the verdict reads): a check whose interval straddles its threshold makes
the finding *inconclusive (uncertain)* unless another check fails beyond doubt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


def _span(interval: tuple[float, float] | None) -> str:
    return "—" if interval is None else f"{interval[0]:.3g}–{interval[1]:.3g}"


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
        return not math.isnan(self.value)  # infinite: a rise from exactly 0

    @property
    def passed(self) -> bool:
        return self.measured and _COMPARE[self.op](self.value, self.threshold)

    def describe(self) -> str:
        return f"{self.quantity} {self.op} {self.threshold:g} ({self.threshold_name})"

    def passes_at(self, value: float) -> bool:
        """Whether ``value`` in place of the measured one would pass."""
        return not math.isnan(value) and _COMPARE[self.op](value, self.threshold)

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
    # the verdict of each seed on its own, and per check the 95 % interval over seeds (None
    # with fewer than 2 seeds); empty when the finding was not evaluated per seed
    seed_verdicts: tuple[Verdict, ...] = ()
    intervals: tuple[tuple[float, float] | None, ...] = ()

    def _interval(self, index: int) -> tuple[float, float] | None:
        return self.intervals[index] if index < len(self.intervals) else None

    def _uncertain(self) -> list[int]:
        """Indices of the checks whose interval straddles their threshold."""
        out = []
        for i, check in enumerate(self.checks):
            interval = self._interval(i)
            if interval is not None and check.passes_at(interval[0]) != check.passes_at(
                interval[1]
            ):
                out.append(i)
        return out

    def _decided(self) -> Verdict:
        """The verdict on the seed means alone."""
        if self.missing or not self.checks:
            return Verdict.NOT_MEASURED
        if any(p.measured and not p.passed for p in self.preconditions):
            return Verdict.INCONCLUSIVE
        if any(not c.measured for c in (*self.preconditions, *self.checks)):
            return Verdict.NOT_MEASURED
        return Verdict.HOLDS if all(c.passed for c in self.checks) else Verdict.FAILS

    @property
    def verdict(self) -> Verdict:
        decided = self._decided()
        if decided not in (Verdict.HOLDS, Verdict.FAILS):
            return decided
        uncertain = set(self._uncertain())
        if any(not c.passed and i not in uncertain for i, c in enumerate(self.checks)):
            return Verdict.FAILS  # one check fails beyond doubt
        return Verdict.INCONCLUSIVE if uncertain else decided

    @property
    def reason(self) -> str:
        """Why the finding is inconclusive or not measured ('' when it is decided)."""
        if self.missing:
            return self.missing
        unmet = [p.shortfall() for p in self.preconditions if p.measured and not p.passed]
        if unmet:
            return "precondition not met: " + "; ".join(unmet)
        unmeasured = [c.quantity for c in (*self.preconditions, *self.checks) if not c.measured]
        if unmeasured:
            return f"not measured: {', '.join(unmeasured)}"
        if self.verdict is Verdict.INCONCLUSIVE:
            straddling = [
                f"{self.checks[i].quantity} 95 % CI {_span(self._interval(i))} straddles "
                f"{self.checks[i].threshold:g}"
                for i in self._uncertain()
            ]
            return "uncertain: " + "; ".join(straddling)
        return ""

    @property
    def seeds(self) -> int:
        """How many seeds the finding was evaluated on one by one (1 when not per seed)."""
        return max(len(self.seed_verdicts), 1)

    def headline(self) -> tuple[Check, tuple[float, float] | None] | None:
        """The check a reader sees first (the first failing or uncertain one, else the first)
        with its interval; None without checks."""
        if not self.checks:
            return None
        uncertain = self._uncertain()
        failing = [i for i, c in enumerate(self.checks) if c.measured and not c.passed]
        index = (failing or uncertain or [0])[0]
        return self.checks[index], self._interval(index)

    def seed_text(self) -> str:
        """``2/3 seeds`` (how many seeds hold on their own), ``1 seed, no interval``, or that
        only the seed means were judged (groups of several seeds with no seed in common)."""
        if len(self.seed_verdicts) > 1:
            held = sum(v is Verdict.HOLDS for v in self.seed_verdicts)
            return f"{held}/{len(self.seed_verdicts)} seeds"
        if len(self.seed_verdicts) == 0 and " seeds)" in self.runs:
            return "seed means only: its groups share no seed"
        return "1 seed, no interval"

    def summary(self, number: bool = True) -> str:
        """The verdict as a reader signs it: ``holds (3/3 seeds; NC1 pgd / clean 18.2, 95 % CI
        14.9–21.6)``, ``inconclusive (uncertain; 2/3 seeds; ...)``; without ``number`` the
        headline number is left out. An undecided verdict gives its reason instead."""
        verdict = self.verdict
        uncertain = verdict is Verdict.INCONCLUSIVE and bool(self._uncertain())
        if verdict is Verdict.NOT_MEASURED or (verdict is Verdict.INCONCLUSIVE and not uncertain):
            return f"{verdict.value} ({self.reason})" if self.reason else verdict.value
        parts = ["uncertain"] if uncertain else []
        parts.append(self.seed_text())
        head = self.headline()
        if number and head is not None:
            check, interval = head
            text = f"{check.quantity} {check.value:.3g}"
            if interval is not None:
                text += f", 95 % CI {_span(interval)}"
            parts.append(text)
        return f"{verdict.value} ({'; '.join(parts)})"

    def measured(self) -> list[tuple[str, float]]:
        """Every number behind the verdict: context, preconditions, then each check's value."""
        return [
            *self.context,
            *((p.quantity, p.value) for p in self.preconditions),
            *((c.quantity, c.value) for c in self.checks),
        ]
