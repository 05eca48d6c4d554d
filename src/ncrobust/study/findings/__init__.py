"""The paper's findings as checks on measured numbers, with thresholds that are visible settings.

Each finding is evaluated per run group (or per matched pair of groups) from the seed means of
a :class:`~ncrobust.study.study.Study`, and again on each seed alone (the seed count and the
interval of every check in its row): a list of :class:`Check` (value, comparison,
threshold) whose outcome gives the verdict, and preconditions whose failure makes it
inconclusive. Nothing is decided by hand; a finding whose data was not measured says which.
"""

from __future__ import annotations

from ncrobust.study.findings.claims import BETWEEN_CLASS_ANGLE, CLAIMS, Claim
from ncrobust.study.findings.epochwise import (
    finding0,
    finding1,
    finding2,
    finding3,
    finding4,
    finding4b,
    finding7,
    finding7b,
    finding9,
)
from ncrobust.study.findings.layerwise import finding5, finding6, finding6c, finding8
from ncrobust.study.findings.seeds import with_seeds
from ncrobust.study.findings.thresholds import Thresholds
from ncrobust.study.findings.verdicts import Check, Finding, Verdict
from ncrobust.study.study import Study

FINDINGS = (
    finding0,
    finding1,
    finding2,
    finding3,
    finding4,
    finding4b,
    finding5,
    finding6,
    finding6c,
    finding7,
    finding7b,
    finding8,
    finding9,
)
ORDER = tuple(CLAIMS)


def evaluate_findings(study: Study, thresholds: Thresholds | None = None) -> list[Finding]:
    """Every finding of the paper evaluated on ``study`` (one row per group or pair), in the
    order of :data:`CLAIMS`."""
    t = thresholds or Thresholds()

    def evaluate(on: Study) -> list[Finding]:
        return [finding for check in FINDINGS for finding in check(on, t)]

    found = with_seeds(study, evaluate, evaluate(study))
    return sorted(found, key=lambda f: ORDER.index(f.key))


__all__ = [
    "BETWEEN_CLASS_ANGLE",
    "CLAIMS",
    "FINDINGS",
    "Check",
    "Claim",
    "Finding",
    "Thresholds",
    "Verdict",
    "evaluate_findings",
]
