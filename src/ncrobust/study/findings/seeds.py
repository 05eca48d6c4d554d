"""Seed-aware verdicts: every finding evaluated on each seed alone and on the seed means.

A group's seeds are matched across groups by their seed number (seed 1 of ST with seed 1 of
AT); each seed's study keeps the group labels, so its findings pair with those of the seed
means by claim and groups. A check's 95 % interval is Student's t interval of its per-seed
values, centred on the value the seed means give.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from ncrobust.study.aggregate import RunGroup
from ncrobust.study.findings.verdicts import Finding
from ncrobust.study.study import Study

CONFIDENCE = 0.95


def seed_studies(study: Study) -> dict[int, Study]:
    """Seed number -> the study of that seed of every group that ran it (empty when no group
    has more than one seed: the seed means are then the seeds)."""
    if all(len(g.runs) < 2 for g in study.groups):
        return {}
    seeds = sorted({s for g in study.groups for s in g.seeds})
    return {
        seed: Study.from_groups(
            [
                RunGroup(g.label, tuple(r for r in g.runs if r.config.seed == seed))
                for g in study.groups
                if seed in g.seeds
            ]
        )
        for seed in seeds
    }


def t_interval(centre: float, values: Sequence[float]) -> tuple[float, float] | None:
    """``centre ± t(n-1) · sd / √n`` over the finite ``values`` (None with fewer than 2)."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if len(finite) < 2 or not math.isfinite(centre):
        return None
    from scipy import stats  # scipy comes with scikit-learn; imported only when needed

    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(finite) - 1)) * float(
        finite.std(ddof=1) / math.sqrt(len(finite))
    )
    return centre - half, centre + half


_SEED_COUNT = re.compile(r" \(\d+ seeds?\)")


def _identity(finding: Finding) -> tuple[str, str, str]:
    return finding.key, finding.claim, _SEED_COUNT.sub("", finding.runs)


def with_seeds(
    study: Study, evaluate: Callable[[Study], list[Finding]], found: list[Finding]
) -> list[Finding]:
    """``found`` (the findings of the seed means) with each seed's verdict and every check's
    interval over the seeds that could evaluate it."""
    per_seed: dict[tuple[str, str, str], list[Finding]] = {}
    for sub in seed_studies(study).values():
        for finding in evaluate(sub):
            per_seed.setdefault(_identity(finding), []).append(finding)
    out = []
    for finding in found:
        seeds = per_seed.get(_identity(finding), [])
        if not seeds:
            out.append(finding)
            continue
        intervals = tuple(
            t_interval(check.value, [_value_of(s, i, check.threshold_name) for s in seeds])
            for i, check in enumerate(finding.checks)
        )
        out.append(
            dataclasses.replace(
                finding,
                seed_verdicts=tuple(s.verdict for s in seeds),
                intervals=intervals,
            )
        )
    return out


def _value_of(finding: Finding, index: int, threshold_name: str) -> float:
    """The value of the seed's check at ``index`` when it tests the same threshold."""
    if index < len(finding.checks) and finding.checks[index].threshold_name == threshold_name:
        return finding.checks[index].value
    return math.nan
