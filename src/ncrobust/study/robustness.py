"""The report's robustness table: clean, PGD-10 and each evaluated attack per group, with the
evidence of gradient masking that ``ncrobust eval``'s checks found.

For every run group and every evaluated threat model (norm, eps) on the test split, at each
run's last evaluated epoch: the clean accuracy of the evaluated points, the PGD-10 accuracy
that training recorded (the metrics table's ``test/pgd`` accuracy at that epoch, on the whole
split; only for the run's own norm and eps), PGD-10 on the points AutoAttack saw, and the
accuracy under each attack of ``ncrobust eval`` — mean ± std (ddof=1) over the seeds that have
it. "PGD-10 overstates robust accuracy by X" is PGD-10 minus AutoAttack on the same points:
how weak PGD-10 is, not evidence of masking by itself. The masking flag rests on evidence, the
checks of the original AutoAttack suite: Square succeeding where the white-box stages failed,
accuracy not falling towards 0 as eps grows, inputs with zero loss gradient, outputs that
change between forward passes or are probabilities.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ncrobust.runs.directory import RunDirectory
from ncrobust.runs.tables import (
    ACCURACY,
    AUTOATTACK,
    CHECKS,
    CLEAN,
    OUTPUT_VARIATION,
    PGD_SAME_POINTS,
    POINTS,
    PROBABILITY_OUTPUT,
    SQUARE_GAIN,
    SWEEP_MULTIPLIERS,
    SWEEP_PREFIX,
    TRANSFER_GAIN,
    ZERO_GRADIENT,
)
from ncrobust.study.aggregate import format_eps
from ncrobust.study.study import Study
from ncrobust.views import OUTPUT_LAYER

MASKING_GAP = 0.05  # PGD-10 minus AutoAttack (same points) above this is called out
SPLIT = "test"
PGD_TRAINED = "PGD-10 (as trained)"
PGD_SAME = "PGD-10 (same points)"
OVERSTATES = "PGD-10 overstates robust accuracy by"
EVIDENCE = "masking evidence"
FLAG = "gradient masking suspected"
# Evidence thresholds: the original AutoAttack suite's checks (autoattack/checks.py) unless noted
SQUARE_GAIN_MAX = 0.002  # check_square_sr: Square lowering robust accuracy by more than this
TRANSFER_GAIN_MAX = SQUARE_GAIN_MAX  # the project's: a transfer attack held to Square's bar
OUTPUT_VARIATION_MAX = 1e-4  # check_randomized: normalised outputs differing by more than this
ZERO_GRADIENT_MAX = 0.0  # check_zero_gradients: any point with an all-zero gradient
# the project's choice: PGD-10 at the largest sweep radius (4·eps, capped at the box) leaves
# at most this accuracy on a model whose gradients guide the attack
SWEEP_ACCURACY_MAX = 0.05


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
    checks: dict[str, Stat] = field(default_factory=dict)  # masking checks' metrics
    worst: dict[str, float] = field(default_factory=dict)  # each check's largest seed value

    @property
    def pgd_same(self) -> Stat | None:
        """PGD-10 on the points the attacks saw (the masking checks' first radius)."""
        return self.checks.get(PGD_SAME_POINTS)

    @property
    def gap(self) -> float:
        """PGD-10 minus AutoAttack on the same points (NaN when either is missing)."""
        auto = self.attacks.get(AUTOATTACK)
        same = self.pgd_same
        if same is None or auto is None:
            return math.nan
        return same.mean - auto.mean

    def evidence(self) -> list[str]:
        """What the masking checks found, in words; empty when nothing points to masking."""
        worst, found = self.worst, []
        if worst.get(SQUARE_GAIN, 0.0) > SQUARE_GAIN_MAX:
            found.append(
                f"Square broke {worst[SQUARE_GAIN]:.1%} of the points the white-box stages "
                "left robust"
            )
        if worst.get(TRANSFER_GAIN, 0.0) > TRANSFER_GAIN_MAX:
            found.append(
                f"PGD-10 transferred from another checkpoint broke {worst[TRANSFER_GAIN]:.1%} "
                "of the points every attack left robust"
            )
        largest = f"{SWEEP_PREFIX}{max(SWEEP_MULTIPLIERS)}"
        if worst.get(largest, 0.0) > SWEEP_ACCURACY_MAX:
            found.append(
                f"PGD-10 accuracy {worst[largest]:.2f} at {max(SWEEP_MULTIPLIERS)}× eps "
                "(does not fall to 0)"
            )
        if worst.get(ZERO_GRADIENT, 0.0) > ZERO_GRADIENT_MAX:
            found.append(f"zero input gradient on {worst[ZERO_GRADIENT]:.1%} of the points")
        if worst.get(OUTPUT_VARIATION, 0.0) > OUTPUT_VARIATION_MAX:
            found.append(f"outputs change between forward passes ({worst[OUTPUT_VARIATION]:.2g})")
        if worst.get(PROBABILITY_OUTPUT, 0.0) > 0:
            found.append("outputs are probabilities (rows sum to 1), not logits")
        return found


@dataclass
class RobustnessTable:
    """The rows, the attacks they show (in order) and the masking threshold."""

    rows: list[RobustnessRow]
    attacks: list[str]
    masking_gap: float = MASKING_GAP
    missing: list[str] = field(default_factory=list)  # groups with no robustness table

    def flagged(self, row: RobustnessRow) -> bool:
        """Gradient masking suspected: a check found evidence of it."""
        return bool(row.evidence())

    def overstated(self, row: RobustnessRow) -> bool:
        """PGD-10 overstates AutoAttack's robust accuracy by more than ``masking_gap``."""
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
            PGD_SAME,
            *self.attacks,
            OVERSTATES,
            EVIDENCE,
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
                    _text(row.pgd_same),
                    *(_text(row.attacks.get(a)) for a in self.attacks),
                    (f"{gap:+.4f}" + (" (!)" if self.overstated(row) else ""))
                    if math.isfinite(gap)
                    else "—",
                    "; ".join(row.evidence()) if row.checks else "not checked",
                    FLAG if self.flagged(row) else "",
                ]
            )
        return out

    def note(self) -> str:
        return (
            "Accuracy on the test split at each run's last evaluated epoch (`ncrobust eval`), "
            "mean ± std over seeds; clean, PGD-10 (same points) and attacks on the same "
            "evaluated points, PGD-10 as trained recorded by training on the whole split. "
            "AutoAttack is the standard suite (APGD-CE, APGD-T, FAB-T, Square). "
            f"'{OVERSTATES}' is PGD-10 minus AutoAttack on the same points, marked (!) above "
            f"{self.masking_gap:g} (--masking-gap): how weak PGD-10 is, not masking. "
            f"'{FLAG}' needs evidence from the original AutoAttack suite's checks: Square "
            f"breaking more than {SQUARE_GAIN_MAX:.1%} the white-box stages missed (or a "
            "transfer attack, `eval --transfer-from`, breaking as many every attack missed), "
            f"PGD-10 accuracy above {SWEEP_ACCURACY_MAX:g} at {max(SWEEP_MULTIPLIERS)}× eps, any "
            "point with a zero input gradient, outputs that change between passes or are "
            "probabilities."
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
            checks: dict[str, list[float]] = {}
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
                found = here[(here["attack"] == CHECKS) & (here["metric"] != POINTS)]
                for metric, value in zip(found["metric"], found["value"], strict=True):
                    checks.setdefault(str(metric), []).append(float(value))
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
                    seeds=max(
                        (len(v) for v in (*per_attack.values(), *checks.values())), default=0
                    ),
                    points=tuple(sorted(points)),
                    clean=Stat.of(clean),
                    pgd_trained=Stat.of(trained),
                    attacks=stats,
                    checks={m: s for m, v in checks.items() if (s := Stat.of(v)) is not None},
                    worst={m: max(v) for m, v in checks.items() if v},
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
