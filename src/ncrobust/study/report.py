"""``ncrobust report``: the findings report (Markdown and self-contained HTML) for run directories.

The report opens with a contents list, then lists the run groups (ST, AT, TRADES in every
table), every finding of the paper as one row — its headline number with the 95 % interval over
seeds, the criterion next to it and the verdict with its seed count — with everything behind it
folded below (a details section in Markdown, ``<details>`` in HTML), the thresholds with their
sources, and the figures (PNG files in ``figures/`` next to ``report.md``; embedded as data URIs
in ``report.html``). Inline code in any text is rendered as ``<code>`` in HTML. Measured zoo
models among the runs (directories with ``zoo.yaml``) add a "Model zoo" section: one row per
model, the rank correlations of each NC statistic with robust accuracy and what holds across
the defenses.
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
from ncrobust.study.aggregate import format_eps, in_mode_order
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
from ncrobust.study.zoo_summary import (
    CAPTION,
    CORRELATION_SHOWN,
    SHOWN,
    TITLE,
    ZooSummary,
    section_markdown,
    summarize,
    zoo_folders,
)
from ncrobust.study.zoo_summary import FIGURE_FILE as ZOO_FIGURE
from ncrobust.study.zoo_summary import draw as draw_zoo

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
    zoo: ZooSummary | None = None
    zoo_figure: Path | None = None


def _number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "n/a"


def _span(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f" (95 % CI {interval[0]:.3g}–{interval[1]:.3g})"


def _measured(finding: Finding) -> str:
    numbers = [f"{name} = {_number(value)}" for name, value in finding.measured()]
    return "; ".join([*numbers, *finding.notes])


def _headline(finding: Finding) -> str:
    """The one number a reader sees first, with its interval over seeds."""
    head = finding.headline()
    if head is None or not head[0].measured:
        return "—"
    check, interval = head
    return f"{check.quantity} = {_number(check.value)}{_span(interval)}"


def _criterion(finding: Finding) -> str:
    """The criterion of the headline number (every criterion is in the details)."""
    head = finding.headline()
    if head is None:
        return "—"
    more = len(finding.checks) - 1
    return head[0].describe()[len(head[0].quantity) + 1 :] + (
        f" (+{more} more)" if more > 0 else ""
    )


def _verdict(finding: Finding) -> str:
    """``holds (3/3 seeds)``, ``inconclusive (uncertain; 1/3 seeds)``, or the verdict with why
    it was not decided (the number is in its own column)."""
    return finding.summary(number=False)


def _details(finding: Finding) -> list[str]:
    """Everything behind a verdict, one line each: what was read, every check with its
    interval and outcome, each seed's verdict, the other numbers and notes."""
    claim = CLAIMS.get(finding.key)
    lines = [f"reads: {claim.reads}"] if claim else []
    if finding.epoch is not None:
        lines.append(f"epoch: {finding.epoch}")
    for i, check in enumerate(finding.checks):
        interval = finding.intervals[i] if i < len(finding.intervals) else None
        outcome = "passes" if check.passed else ("fails" if check.measured else "not measured")
        lines.append(
            f"criterion: {check.describe()}: {_number(check.value)}{_span(interval)}, {outcome}"
        )
    lines += [f"precondition: {p.describe()}: {_number(p.value)}" for p in finding.preconditions]
    if finding.seed_verdicts:
        lines.append("per seed: " + ", ".join(v.value for v in finding.seed_verdicts))
    lines += [f"{name} = {_number(value)}" for name, value in finding.context]
    lines += [f"note: {note}" for note in finding.notes]
    if finding.reason:
        lines.append(f"why: {finding.reason}")
    return lines


def order_findings(study: Study, findings: Sequence[Finding]) -> list[Finding]:
    """Findings in the order of the paper's claims, each claim's rows in the group order."""
    rank = {g.label: i for i, g in enumerate(in_mode_order(study.groups))}
    keys = list(CLAIMS)

    def position(f: Finding) -> tuple[int, int]:
        label = f.runs.split(" (")[0]
        return (keys.index(f.key) if f.key in keys else len(keys), rank.get(label, len(rank)))

    return sorted(findings, key=position)


def _run_rows(study: Study) -> list[list[str]]:
    rows = []
    for g in in_mode_order(study.groups):
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
FINDING_HEADER = ["#", "finding", "runs", "headline number", "criterion", "verdict"]


def _claim(finding: Finding) -> str:
    claim = CLAIMS.get(finding.key)
    return f"{finding.claim} [{claim.source}]" if claim else finding.claim


def _finding_rows(findings: Sequence[Finding]) -> list[list[str]]:
    return [[f.key, _claim(f), f.runs, _headline(f), _criterion(f), _verdict(f)] for f in findings]


def _threshold_rows(thresholds: Thresholds) -> list[list[str]]:
    meaning, source = Thresholds.describe(), Thresholds.sources()
    return [
        [
            name,
            f"{getattr(thresholds, name):g}",
            meaning[name],
            source[name],
            f"`--{name.replace('_', '-')}`",
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
    "Each finding is judged on the seed means and on every seed alone: 'holds (2/3 seeds)' "
    "counts the seeds on which it holds, and a number's 95 % interval is Student's t interval "
    "of its per-seed values. 'Holds' / 'does not hold' say whether the paper's claim "
    "reproduced on these runs; 'inconclusive (uncertain)' means a criterion's interval "
    "straddles its threshold; 'inconclusive' with a reason means a precondition of the claim "
    "was not met (the attack missed its targets, the run did not reach the terminal phase, "
    "too few layers), so the claim was not tested. The headline number of each finding is "
    "the first criterion that fails or is uncertain, else the first; every criterion and "
    "number is in its details. Each threshold's default and its source in the paper (or the "
    "reason for the project's own choice) are listed below."
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


def _slug(title: str) -> str:
    """The anchor a Markdown renderer gives a heading."""
    kept = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -")
    return kept.replace(" ", "-")


def _sections(report: Report) -> list[str]:
    """The report's section titles, in order (the contents list)."""
    trades = _trades_rows(report.study, report.findings)
    return [
        "Runs",
        "Findings",
        "Finding details",
        *(["TRADES: frozen BN vs original"] if trades else []),
        "Thresholds",
        *(["Robustness"] if report.robustness else []),
        *([TITLE] if report.zoo else []),
        "Figures",
    ]


def _summary_line(report: Report) -> str:
    return (
        f"{len(report.study.groups)} run group(s), "
        f"{sum(len(g.runs) for g in report.study.groups)} run(s). "
        f"Findings: {findings_summary(report.findings)}."
    )


def render_markdown(report: Report) -> str:
    """The report as Markdown; figures linked relative to the report's folder."""
    contents = "\n".join(f"- [{t}](#{_slug(t)})" for t in _sections(report))
    details = []
    for f in report.findings:
        details.append(f"### {f.key} · {f.runs}\n\n{_claim(f)}: **{_verdict(f)}**")
        details.append("\n".join(f"- {_md_cell(line)}" for line in _details(f)))
    parts = [
        "# ncrobust findings report",
        _summary_line(report),
        "Contents:\n\n" + contents,
        NOTES,
        "## Runs",
        _md_table(RUN_HEADER, _run_rows(report.study)),
        "## Findings",
        _md_table(FINDING_HEADER, _finding_rows(report.findings)),
        "## Finding details",
        *details,
    ]
    trades = _trades_rows(report.study, report.findings)
    if trades:
        parts += ["## TRADES: frozen BN vs original", TRADES_NOTE, _md_table(TRADES_HEADER, trades)]
    parts += [
        "## Thresholds",
        _md_table(THRESHOLD_HEADER, _threshold_rows(report.thresholds)),
        *([robustness_markdown(report.robustness)] if report.robustness else []),
        *([_zoo_markdown(report)] if report.zoo else []),
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


def _zoo_markdown(report: Report) -> str:
    """The "Model zoo" section, its figure linked from ``figures/`` (when drawn)."""
    assert report.zoo is not None
    figure = f"{FIGURE_DIR}/{ZOO_FIGURE}" if report.zoo_figure else None
    return section_markdown(report.zoo, figure, table=_md_table)


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
code { background: #f3f3f3; padding: 0 0.2em; border-radius: 3px; }
details summary { cursor: pointer; color: #444; } details ul { margin: 0.3em 0; }
figcaption { font-size: 0.9em; color: #444; }
"""
VERDICT_CLASS = {
    Verdict.HOLDS: "holds",
    Verdict.FAILS: "fails",
    Verdict.INCONCLUSIVE: "inconclusive",
    Verdict.NOT_MEASURED: "missing",
}


_CODE = re.compile(r"`([^`]+)`")


def _html_text(text: str) -> str:
    """Escaped text with its `inline code` spans as ``<code>``."""
    return _CODE.sub(r"<code>\1</code>", html.escape(text))


def _html_table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    classes: Sequence[str] | None = None,
    folded: Sequence[Sequence[str]] | None = None,
) -> str:
    """A table; ``classes`` style each row's last cell, ``folded`` adds lines under a
    ``<details>`` in each row's second cell."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = [f"<td>{_html_text(c)}</td>" for c in row]
        if folded is not None:
            items = "".join(f"<li>{_html_text(line)}</li>" for line in folded[i])
            cells[1] = (
                f"<td>{_html_text(row[1])}<details><summary>details</summary>"
                f"<ul>{items}</ul></details></td>"
            )
        if classes is not None:
            cells[-1] = f'<td class="{classes[i]}">{_html_text(row[-1])}</td>'
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _h2(title: str) -> str:
    return f"<h2 id='{_slug(title)}'>{html.escape(title)}</h2>"


def _png(path: Path, alt: str, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f"<figure><img alt='{alt}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _zoo_html(report: Report) -> str:
    """The "Model zoo" section as HTML, its figure embedded."""
    zoo = report.zoo
    assert zoo is not None
    findings = "".join(f"<li>{_html_text(f)}</li>" for f in zoo.findings())
    return "\n".join(
        [
            _h2(TITLE),
            _html_table(SHOWN, zoo.model_rows()),
            f"<p>{html.escape(zoo.note())}</p>",
            _html_table(CORRELATION_SHOWN, zoo.correlation_rows()),
            _png(report.zoo_figure, "model zoo", CAPTION) if report.zoo_figure else "",
            f"<h3>Findings across defenses</h3><ul>{findings}</ul>",
        ]
    )


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (figures embedded as base64 PNG)."""
    findings = report.findings
    contents = "".join(
        f"<li><a href='#{_slug(t)}'>{html.escape(t)}</a></li>"
        for t in _sections(report)
        if t != "Finding details"  # folded into the findings table
    )
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>ncrobust findings report</title><style>{CSS}</style></head><body>",
        "<h1>ncrobust findings report</h1>",
        f"<p>{html.escape(_summary_line(report))}</p>",
        f"<nav><p>Contents:</p><ul>{contents}</ul></nav>",
        f"<p>{html.escape(NOTES)}</p>",
        _h2("Runs"),
        _html_table(RUN_HEADER, _run_rows(report.study)),
        _h2("Findings"),
        _html_table(
            FINDING_HEADER,
            _finding_rows(findings),
            [VERDICT_CLASS[f.verdict] for f in findings],
            [_details(f) for f in findings],
        ),
    ]
    trades = _trades_rows(report.study, findings)
    if trades:
        parts += [
            _h2("TRADES: frozen BN vs original"),
            f"<p>{html.escape(TRADES_NOTE)}</p>",
            _html_table(TRADES_HEADER, trades),
        ]
    parts += [
        _h2("Thresholds"),
        _html_table(THRESHOLD_HEADER, _threshold_rows(report.thresholds)),
        *(
            [f"<section id='robustness'>{robustness_html(report.robustness)}</section>"]
            if report.robustness
            else []
        ),
        *([_zoo_html(report)] if report.zoo else []),
        _h2("Figures"),
    ]
    for name in FIGURES:
        if name in report.figures:
            png = next((p for p in report.figures[name] if p.suffix == ".png"), None)
            if png is not None:
                parts.append(_png(png, name, CAPTIONS[name]))
        elif name in report.skipped:
            parts.append(
                f"<p class='missing'>{name} not drawn: {_html_text(report.skipped[name])}</p>"
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
    robustness = _in_group_order(study, robustness_table(study, masking_gap))
    findings = order_findings(study, evaluate_findings(study, thresholds))
    folders = zoo_folders(r.path for g in study.groups for r in g.runs)
    zoo = summarize(folders) if folders else None
    zoo_figure = None
    if zoo is not None and figures:
        zoo_figure = Path(out_dir) / FIGURE_DIR / ZOO_FIGURE
        draw_zoo(zoo.table, zoo_figure)
    return Report(study, findings, thresholds, written, skipped, robustness, zoo, zoo_figure)


def _in_group_order(study: Study, table: RobustnessTable) -> RobustnessTable:
    """The robustness rows in the report's group order (stable within a group)."""
    rank = {g.label: i for i, g in enumerate(in_mode_order(study.groups))}
    rows = getattr(table, "rows", None)
    if not isinstance(rows, list) or not dataclasses.is_dataclass(table):
        return table
    ordered = sorted(rows, key=lambda row: rank.get(getattr(row, "group", ""), len(rank)))
    return dataclasses.replace(table, rows=ordered)


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
