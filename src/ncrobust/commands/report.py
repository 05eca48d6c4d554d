"""``ncrobust report``: the findings report (markdown and HTML, figures inlined) for runs."""

from __future__ import annotations

import argparse

from ncrobust.commands.common import add_where_argument
from ncrobust.errors import UsageError
from ncrobust.study.findings import Thresholds
from ncrobust.study.plots import FIGURES, figure_names
from ncrobust.study.report import build_report, findings_summary, save_report
from ncrobust.study.robustness import MASKING_GAP
from ncrobust.study.study import Study, parse_where


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust report``: runs, output folder, figures and every threshold."""
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="run directories, or folders holding run directories"
    )
    parser.add_argument(
        "--out",
        default="report",
        help="folder for report.md, report.html and figures/ (default: report)",
    )
    parser.add_argument(
        "--figures",
        default="all",
        help=f"comma-separated figures to include ({', '.join(FIGURES)}), "
        "'all' or 'none' (default: all)",
    )
    add_where_argument(parser)
    parser.add_argument(
        "--masking-gap",
        type=float,
        default=MASKING_GAP,
        help="mark PGD-10 accuracy above AutoAttack's (same points) by more than this as "
        "overstated; the gradient-masking flag rests on the masking checks' evidence "
        f"(default: {MASKING_GAP:g})",
    )
    group = parser.add_argument_group("thresholds of the verdicts")
    defaults = Thresholds()
    for name, meaning in Thresholds.describe().items():
        group.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=float,
            default=getattr(defaults, name),
            help=f"{meaning} (default: {getattr(defaults, name):g})",
        )


def run(args: argparse.Namespace) -> int:
    """Validate the flags and runs, then write the report; prints where it went."""
    thresholds = Thresholds(**{name: getattr(args, name) for name in Thresholds.describe()})
    chosen = [] if args.figures.strip().lower() == "none" else args.figures.split(",")
    names = figure_names(chosen) if chosen else []  # unknown names refused before reading
    if not args.masking_gap >= 0:
        raise UsageError(f"--masking-gap must be >= 0, got {args.masking_gap}")
    where = parse_where(args.where)
    study = Study.from_paths(args.runs, where)
    report = build_report(study, args.out, thresholds, names, args.masking_gap)
    path = save_report(report, args.out)
    print(f"wrote {path} and {path.with_suffix('.html')}")
    for name, reason in report.skipped.items():
        print(f"skipped {name}: {reason}")
    print(f"findings: {findings_summary(report.findings)}")
    return 0
