"""``ncrobust report``: the findings report (Markdown and self-contained HTML) for run directories.

The report lists the run groups, every finding of the paper with its measured numbers, the
threshold and the verdict computed from them, the thresholds themselves, and the figures
(PNG files in ``figures/`` next to ``report.md``; embedded as data URIs in ``report.html``).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ncrobust.atomic import atomic_write_text
from ncrobust.runs.directory import RunDirectory
from ncrobust.study.aggregate import format_eps
from ncrobust.study.findings import CLAIMS, Finding, Thresholds, Verdict, evaluate_findings
from ncrobust.study.plots import CAPTIONS, FIGURES, figure_names, render_figures
from ncrobust.study.robustness import (
    MASKING_GAP,
    RobustnessTable,
    robustness_html,
    robustness_markdown,
    robustness_table,
)
from ncrobust.study.study import Study

FIGURE_DIR = "figures"


@dataclasses.dataclass
class Report:
    """Everything a report shows, rendered to Markdown and HTML by the functions below."""

    study: Study
    findings: list[Finding]
    thresholds: Thresholds
    figures: dict[str, list[Path]]
    skipped: dict[str, str]
    robustness: RobustnessTable | None = None


def _number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "n/a"


def _measured(finding: Finding) -> str:
    numbers = [f"{name} = {_number(value)}" for name, value in finding.measured()]
    return "; ".join([*numbers, *finding.notes])


def _criteria(finding: Finding) -> str:
    return "; ".join(c.describe() for c in finding.checks) or "—"


def _verdict(finding: Finding) -> str:
    reason = finding.reason
    return f"{finding.verdict.value} ({reason})" if reason else finding.verdict.value


def _run_rows(study: Study) -> list[list[str]]:
    rows = []
    for g in study.groups:
        c = g.config
        last = study.last_epoch(g.label)
        done = sum(RunDirectory(r.path).is_complete() for r in g.runs)
        rows.append(
            [
                g.label,
                c.mode,
                ", ".join(map(str, g.seeds)),
                c.dataset,
                c.model,
                c.norm,
                format_eps(c.eps),
                str(c.epochs),
                "—" if last is None else str(last),
                f"{done}/{len(g.runs)}",
                ", ".join(str(r.path) for r in g.runs),
            ]
        )
    return rows


RUN_HEADER = [
    "group",
    "mode",
    "seeds",
    "dataset",
    "model",
    "norm",
    "eps",
    "epochs",
    "last measured epoch",
    "finished",
    "run directories",
]
FINDING_HEADER = ["#", "finding", "runs", "epoch", "measured", "criterion", "verdict"]


def _claim(finding: Finding) -> str:
    claim = CLAIMS.get(finding.key)
    return f"{finding.claim} [{claim.source}]" if claim else finding.claim


def _finding_rows(findings: Sequence[Finding]) -> list[list[str]]:
    return [
        [
            f.key,
            _claim(f),
            f.runs,
            "—" if f.epoch is None else str(f.epoch),
            _measured(f),
            _criteria(f),
            _verdict(f),
        ]
        for f in findings
    ]


def _threshold_rows(thresholds: Thresholds) -> list[list[str]]:
    meaning, source = Thresholds.describe(), Thresholds.sources()
    return [
        [
            name,
            f"{getattr(thresholds, name):g}",
            meaning[name],
            source[name],
            f"--{name.replace('_', '-')}",
        ]
        for name in meaning
    ]


THRESHOLD_HEADER = ["threshold", "value", "meaning", "source of the default", "flag"]


def _trades_rows(study: Study, findings: Sequence[Finding]) -> list[list[str]]:
    """TRADES with frozen BN (as released) beside the original on the same settings: the
    paper's TRADES finding for each, with its numbers (empty unless both variants ran)."""
    trades = [f for f in findings if f.key == "4" and f.checks]
    frozen = {g.label for g in study.groups_of(("trades",)) if g.config.trades_bn_eval}
    labels = {f.runs.split(" (")[0] for f in trades}
    if not (labels & frozen) or not (labels - frozen):
        return []
    rows = []
    for f in trades:
        label = f.runs.split(" (")[0]
        variant = "TRADES (frozen BN, as released)" if label in frozen else "TRADES"
        rows.append([variant, f.runs, _measured(f), _verdict(f)])
    return rows


TRADES_HEADER = ["variant", "runs", "measured", "verdict of finding 4"]
TRADES_NOTE = (
    "Does 'TRADES does not collapse' survive fixing the frozen BN of the released code? "
    "Finding 4 on each variant against the same AT run:"
)


def findings_summary(findings: Sequence[Finding]) -> str:
    counts = {v: sum(f.verdict is v for f in findings) for v in Verdict}
    return ", ".join(f"{counts[v]} {v.value}" for v in Verdict)


NOTES = (
    "Numbers are means over the seeds of each group at the last measured epoch (the last "
    "epoch with more than one layer for the layerwise findings). Figures show mean ± std over "
    "seeds (std with ddof=1; a single-seed group has no band). Every verdict is computed from "
    "the numbers shown against the threshold shown; change a threshold with its flag. "
    "'Holds' / 'does not hold' say whether the paper's claim reproduced on these runs; "
    "'inconclusive' means a precondition of the claim was not met (the attack missed its "
    "targets, the run did not reach the terminal phase, too few layers), so the claim was not "
    "tested. Each threshold's default and where in the paper it comes from are listed below."
)


# -- Markdown -------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    """A table cell's text as inert Markdown: run names come from directory names, so no HTML
    tag, link or cell break may pass through (comparisons such as ``<= 3`` stay as they are)."""
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)
    return text.replace("](", "]\\(")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    """The report as Markdown; figures linked relative to the report's folder."""
    parts = [
        "# ncrobust findings report",
        f"{len(report.study.groups)} run group(s), "
        f"{sum(len(g.runs) for g in report.study.groups)} run(s). "
        f"Findings: {findings_summary(report.findings)}.",
        NOTES,
        "## Runs",
        _md_table(RUN_HEADER, _run_rows(report.study)),
        "## Findings",
        _md_table(FINDING_HEADER, _finding_rows(report.findings)),
    ]
    trades = _trades_rows(report.study, report.findings)
    if trades:
        parts += ["## TRADES: frozen BN vs original", TRADES_NOTE, _md_table(TRADES_HEADER, trades)]
    parts += [
        "## Thresholds",
        _md_table(THRESHOLD_HEADER, _threshold_rows(report.thresholds)),
        *([robustness_markdown(report.robustness)] if report.robustness else []),
        "## Figures",
    ]
    for name in FIGURES:
        if name in report.figures:
            png = next((p for p in report.figures[name] if p.suffix == ".png"), None)
            if png is not None:
                parts.append(f"![{name}]({FIGURE_DIR}/{png.name})\n\n{CAPTIONS[name]}")
        elif name in report.skipped:
            parts.append(f"- {name} not drawn: {report.skipped[name]}")
    return "\n\n".join(parts) + "\n"


# -- HTML -----------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
.holds { color: #176317; font-weight: 600; }
.fails { color: #a31515; font-weight: 600; }
.missing { color: #777; }
.inconclusive { color: #9a6700; font-weight: 600; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #444; }
"""
VERDICT_CLASS = {
    Verdict.HOLDS: "holds",
    Verdict.FAILS: "fails",
    Verdict.INCONCLUSIVE: "inconclusive",
    Verdict.NOT_MEASURED: "missing",
}


def _html_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], classes: Sequence[str] | None = None
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = [f"<td>{html.escape(c)}</td>" for c in row]
        if classes is not None:
            cells[-1] = f'<td class="{classes[i]}">{html.escape(row[-1])}</td>'
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (figures embedded as base64 PNG)."""
    findings = report.findings
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>ncrobust findings report</title><style>{CSS}</style></head><body>",
        "<h1>ncrobust findings report</h1>",
        f"<p>{len(report.study.groups)} run group(s), "
        f"{sum(len(g.runs) for g in report.study.groups)} run(s). "
        f"Findings: {html.escape(findings_summary(findings))}.</p>",
        f"<p>{html.escape(NOTES)}</p>",
        "<h2>Runs</h2>",
        _html_table(RUN_HEADER, _run_rows(report.study)),
        "<h2>Findings</h2>",
        _html_table(
            FINDING_HEADER, _finding_rows(findings), [VERDICT_CLASS[f.verdict] for f in findings]
        ),
    ]
    trades = _trades_rows(report.study, findings)
    if trades:
        parts += [
            "<h2>TRADES: frozen BN vs original</h2>",
            f"<p>{html.escape(TRADES_NOTE)}</p>",
            _html_table(TRADES_HEADER, trades),
        ]
    parts += [
        "<h2>Thresholds</h2>",
        _html_table(THRESHOLD_HEADER, _threshold_rows(report.thresholds)),
        *([robustness_html(report.robustness)] if report.robustness else []),
        "<h2>Figures</h2>",
    ]
    for name in FIGURES:
        if name in report.figures:
            png = next((p for p in report.figures[name] if p.suffix == ".png"), None)
            if png is not None:
                data = base64.b64encode(png.read_bytes()).decode("ascii")
                parts.append(
                    f"<figure><img alt='{name}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{html.escape(CAPTIONS[name])}</figcaption></figure>"
                )
        elif name in report.skipped:
            parts.append(
                f"<p class='missing'>{name} not drawn: {html.escape(report.skipped[name])}</p>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


# -- entry points ---------------------------------------------------------------------------


def build_report(
    study: Study,
    out_dir: str | Path,
    thresholds: Thresholds,
    figures: Sequence[str],
    masking_gap: float = MASKING_GAP,
) -> Report:
    """Draw the named figures into ``out_dir/figures`` and evaluate every finding."""
    written, skipped = (
        render_figures(study, Path(out_dir) / FIGURE_DIR, figures, ("png",))
        if figures
        else ({}, {})
    )
    robustness = robustness_table(study, masking_gap)
    findings = evaluate_findings(study, thresholds)
    return Report(study, findings, thresholds, written, skipped, robustness)


def save_report(report: Report, out_dir: str | Path) -> Path:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; returns the Markdown path."""
    md_path = Path(out_dir) / "report.md"
    atomic_write_text(md_path, render_markdown(report))
    atomic_write_text(md_path.with_suffix(".html"), render_html(report))
    return md_path


def write_report(
    run_dirs: Iterable[str | Path] | Study,
    out_dir: str | Path,
    thresholds: Thresholds | None = None,
    figures: Iterable[str] = tuple(FIGURES),
    masking_gap: float = MASKING_GAP,
) -> Path:
    """Write ``out_dir/report.md``, ``out_dir/report.html`` and ``out_dir/figures/*.png``.

    ``run_dirs`` are run directories or folders of runs (or an already loaded Study);
    ``figures=()`` leaves the figures out. Returns the path of ``report.md``.
    """
    chosen = list(figures)
    names = figure_names(chosen) if chosen else []
    study = run_dirs if isinstance(run_dirs, Study) else Study.from_paths(run_dirs)
    report = build_report(study, out_dir, thresholds or Thresholds(), names, masking_gap)
    return save_report(report, out_dir)
