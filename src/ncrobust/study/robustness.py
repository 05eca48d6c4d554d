"""The report's robustness table: clean, PGD-10 as trained and each evaluated attack per group.

For every run group and every evaluated threat model (norm, eps) on the test split, at each
run's last evaluated epoch: the clean accuracy of the evaluated points, the PGD-10 accuracy
that training recorded (the metrics table's ``test/pgd`` accuracy at that epoch; only for the
run's own norm and eps), and the accuracy under each attack of ``ncrobust eval`` — mean ± std
(ddof=1) over the seeds that have it. A PGD-10 accuracy above AutoAttack's by more than
``masking_gap`` is flagged as possible gradient masking: PGD overstating robustness.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ncrobust.runs.directory import RunDirectory
from ncrobust.runs.tables import ACCURACY, AUTOATTACK, CLEAN, POINTS
from ncrobust.study.aggregate import format_eps
from ncrobust.study.study import Study
from ncrobust.views import OUTPUT_LAYER

MASKING_GAP = 0.05  # PGD-10 minus AutoAttack accuracy above this: possible gradient masking
SPLIT = "test"
PGD_TRAINED = "PGD-10 (as trained)"
FLAG = "possible gradient masking"


@dataclass(frozen=True)
class Stat:
    """Mean ± std over seeds (std NaN for one seed) and how many seeds had a value."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return None
        std = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
        return cls(float(np.mean(finite)), std, len(finite))

    def describe(self) -> str:
        if math.isnan(self.std):
            return f"{self.mean:.4f}"
        return f"{self.mean:.4f} ± {self.std:.4f}"


@dataclass(frozen=True)
class RobustnessRow:
    """One group at one threat model."""

    group: str
    epochs: tuple[int, ...]
    norm: str
    eps: float
    seeds: int
    points: tuple[int, ...]
    clean: Stat | None
    pgd_trained: Stat | None
    attacks: dict[str, Stat]

    @property
    def gap(self) -> float:
        """PGD-10 as trained minus AutoAttack (NaN when either is missing)."""
        auto = self.attacks.get(AUTOATTACK)
        if self.pgd_trained is None or auto is None:
            return math.nan
        return self.pgd_trained.mean - auto.mean


@dataclass
class RobustnessTable:
    """The rows, the attacks they show (in order) and the masking threshold."""

    rows: list[RobustnessRow]
    attacks: list[str]
    masking_gap: float = MASKING_GAP
    missing: list[str] = field(default_factory=list)  # groups with no robustness table

    def flagged(self, row: RobustnessRow) -> bool:
        return math.isfinite(row.gap) and row.gap > self.masking_gap

    def header(self) -> list[str]:
        return [
            "group",
            "epoch",
            "norm",
            "eps",
            "seeds",
            "points",
            "clean",
            PGD_TRAINED,
            *self.attacks,
            "PGD-10 − AutoAttack",
            "flag",
        ]

    def cells(self) -> list[list[str]]:
        out = []
        for row in self.rows:
            gap = row.gap
            out.append(
                [
                    row.group,
                    ", ".join(map(str, row.epochs)),
                    row.norm,
                    format_eps(row.eps),
                    str(row.seeds),
                    ", ".join(map(str, row.points)),
                    _text(row.clean),
                    _text(row.pgd_trained),
                    *(_text(row.attacks.get(a)) for a in self.attacks),
                    f"{gap:+.4f}" if math.isfinite(gap) else "—",
                    FLAG if self.flagged(row) else "",
                ]
            )
        return out

    def note(self) -> str:
        return (
            "Accuracy on the test split at each run's last evaluated epoch (`ncrobust eval`), "
            "mean ± std over seeds; clean and attacks on the same evaluated points, PGD-10 as "
            "recorded by training on the whole split. AutoAttack is the standard suite "
            "(APGD-CE, APGD-T, FAB-T, Square). A PGD-10 accuracy above AutoAttack's by more "
            f"than {self.masking_gap:g} (--masking-gap) is flagged as {FLAG}."
        )


def _text(stat: Stat | None) -> str:
    return "—" if stat is None else stat.describe()


def _trained_pgd(metrics: pd.DataFrame, epoch: int) -> float:
    mask = (
        (metrics["epoch"] == epoch)
        & (metrics["split"] == SPLIT)
        & (metrics["view"] == "pgd")
        & (metrics["layer"] == OUTPUT_LAYER)
        & (metrics["metric"] == ACCURACY)
    )
    values = metrics.loc[mask, "value"]
    return float(values.iloc[-1]) if len(values) else math.nan


def robustness_table(study: Study, masking_gap: float = MASKING_GAP) -> RobustnessTable:
    """The robustness rows of every group of ``study`` that ran ``ncrobust eval``."""
    rows: list[RobustnessRow] = []
    attacks: list[str] = []
    missing: list[str] = []
    for group in study.groups:
        # per run: its last evaluated epoch's test rows
        finals: list[tuple[pd.DataFrame, float]] = []
        for run in group.runs:
            table = RunDirectory(run.path).read_robustness()
            table = table[table["split"] == SPLIT]
            if table.empty:
                continue
            epoch = int(table["epoch"].max())
            last = table[table["epoch"] == epoch]
            finals.append((last, _trained_pgd(run.metrics, epoch)))
        if not finals:
            missing.append(group.label)
            continue
        models = sorted(
            {
                (str(n), float(e))
                for last, _ in finals
                for n, e, a in zip(last["norm"], last["eps"], last["attack"], strict=True)
                if a != CLEAN
            }
        )
        if not models:
            missing.append(group.label)
        for norm, eps in models:
            per_attack: dict[str, list[float]] = {}
            clean: list[float] = []
            trained: list[float] = []
            epochs: set[int] = set()
            points: set[int] = set()
            for last, pgd_value in finals:
                here = last[(last["norm"] == norm) & np.isclose(last["eps"], eps)]
                here = here[here["attack"] != CLEAN]
                if here.empty:
                    continue
                epochs.add(int(here["epoch"].iloc[0]))
                base = last[(last["attack"] == CLEAN) & (last["metric"] == ACCURACY)]
                clean += [float(v) for v in base["value"]]
                points |= {int(v) for v in here.loc[here["metric"] == POINTS, "value"]}
                config = group.config
                if norm == config.norm and math.isclose(eps, config.eps, rel_tol=1e-9):
                    trained.append(pgd_value)
                for attack, value in zip(
                    here.loc[here["metric"] == ACCURACY, "attack"],
                    here.loc[here["metric"] == ACCURACY, "value"],
                    strict=True,
                ):
                    per_attack.setdefault(str(attack), []).append(float(value))
                    if attack not in attacks:
                        attacks.append(str(attack))
            stats = {a: s for a, v in per_attack.items() if (s := Stat.of(v)) is not None}
            rows.append(
                RobustnessRow(
                    group=group.label,
                    epochs=tuple(sorted(epochs)),
                    norm=norm,
                    eps=eps,
                    seeds=max(len(v) for v in per_attack.values()),
                    points=tuple(sorted(points)),
                    clean=Stat.of(clean),
                    pgd_trained=Stat.of(trained),
                    attacks=stats,
                )
            )
    attacks.sort(key=lambda a: (a != AUTOATTACK, a))
    return RobustnessTable(rows, attacks, masking_gap, missing)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def robustness_markdown(table: RobustnessTable) -> str:
    """The ``## Robustness`` section in Markdown."""
    parts = ["## Robustness"]
    if not table.rows:
        parts.append("No run was evaluated under strong attacks yet: run `ncrobust eval RUN`.")
        return "\n\n".join(parts)
    parts.append(table.note())
    header = table.header()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.cells()]
    parts.append("\n".join(lines))
    if table.missing:
        parts.append(f"Not evaluated: {', '.join(table.missing)}.")
    return "\n\n".join(parts)


def robustness_html(table: RobustnessTable) -> str:
    """The robustness section as HTML (flagged rows' flag cell in the failure colour)."""
    parts = ["<h2>Robustness</h2>"]
    if not table.rows:
        parts.append(
            "<p>No run was evaluated under strong attacks yet: run <code>ncrobust eval "
            "RUN</code>.</p>"
        )
        return "\n".join(parts)
    parts.append(f"<p>{html.escape(table.note())}</p>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header())
    body = []
    for row, cells in zip(table.rows, table.cells(), strict=True):
        tds = [f"<td>{html.escape(c)}</td>" for c in cells]
        if table.flagged(row):
            tds[-1] = f'<td class="fails">{html.escape(cells[-1])}</td>'
        body.append("<tr>" + "".join(tds) + "</tr>")
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    if table.missing:
        parts.append(
            f"<p class='missing'>Not evaluated: {html.escape(', '.join(table.missing))}.</p>"
        )
    return "\n".join(parts)
