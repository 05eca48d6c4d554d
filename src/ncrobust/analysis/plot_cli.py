"""``ncrobust plot``: draw the paper's figures from run directories into a folder."""

from __future__ import annotations

import argparse
import sys

from ncrobust.analysis.drawing import check_formats
from ncrobust.analysis.plots import FIGURES, figure_names, render_figures
from ncrobust.analysis.study import Study


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust plot``."""
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="run directories, or folders holding run directories"
    )
    parser.add_argument("--out", default="figures", help="output folder (default: figures)")
    parser.add_argument(
        "--figures",
        default="all",
        help=f"comma-separated, from {', '.join(FIGURES)}; or all (default)",
    )
    parser.add_argument(
        "--formats",
        default="png,pdf",
        help="comma-separated file formats: png, pdf, svg (default: png,pdf)",
    )


def run(args: argparse.Namespace) -> int:
    """Validate names, formats and runs, then draw; 1 if no requested figure had data."""
    names = figure_names(args.figures.split(","))
    formats = check_formats(args.formats.split(","))
    study = Study.from_paths(args.runs)
    written, skipped = render_figures(study, args.out, names, formats)
    for paths in written.values():
        for path in paths:
            print(f"wrote {path}")
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if not written:
        print("ncrobust plot: no requested figure has data in these runs", file=sys.stderr)
        return 1
    return 0
