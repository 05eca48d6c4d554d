"""``ncrobust plot``: draw the paper's figures (or any recorded metric) from run directories."""

from __future__ import annotations

import argparse
import sys

from ncrobust.commands.common import add_where_argument
from ncrobust.study.drawing import check_formats, save_figure
from ncrobust.study.paper_figures import render_paper_figures
from ncrobust.study.plots import (
    EQUINORM_FORMS,
    FIGURES,
    NC3_FORMS,
    check_metrics,
    figure_metrics,
    figure_names,
    render_figures,
)
from ncrobust.study.study import Study, parse_where
from ncrobust.views import SPLITS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust plot``."""
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="run directories, or folders holding run directories"
    )
    parser.add_argument("--out", default="figures", help="output folder (default: figures)")
    parser.add_argument(
        "--figures",
        default="all",
        help=f"comma-separated, from {', '.join(FIGURES)}; or all (default: all)",
    )
    parser.add_argument(
        "--formats",
        default="png,pdf",
        help="comma-separated file formats: png, pdf, svg (default: png,pdf)",
    )
    add_where_argument(parser)
    parser.add_argument(
        "--paper",
        action="store_true",
        help="draw every numbered figure of the paper (fig02 ... fig16) the runs support, each "
        "from its own dataset's runs (figNN) and, from any other dataset's runs, under the "
        "paper's number (figNN-DATASET); train data only unless --test",
    )
    parser.add_argument(
        "--test", action="store_true", help="with --paper: add the test-split curves"
    )
    parser.add_argument(
        "--nc3",
        choices=tuple(NC3_FORMS),
        default="frobenius",
        help="NC3 form: frobenius (the released code's, behind the paper's curves) "
        "or text (the formula of the paper's Appendix B.2) (default: frobenius)",
    )
    parser.add_argument(
        "--nc2-equinorm",
        choices=tuple(EQUINORM_FORMS),
        default="ratio",
        help="NC2 equinorm form: ratio (std/mean, the released code's) or std (the "
        "paper text's; needs a recorded nc2_equinorm_std) (default: ratio)",
    )
    parser.add_argument(
        "--metrics",
        default=None,
        help="draw these recorded metrics (comma-separated, e.g. cdnv,etf_error) against "
        "--x instead of the paper's figures",
    )
    parser.add_argument(
        "--x", choices=("epoch", "depth"), default="epoch", help="x axis of --metrics"
    )


def run(args: argparse.Namespace) -> int:
    """Validate names, formats, selection and runs, then draw; 1 if nothing had data."""
    names = figure_names(args.figures.split(","))
    formats = check_formats(args.formats.split(","))
    where = parse_where(args.where)
    study = Study.from_paths(args.runs, where)
    if args.metrics is not None:
        metrics = check_metrics(study, args.metrics.split(","))
        fig = figure_metrics(study, metrics, x=args.x)
        stem = "metrics-" + "-".join(metrics) + f"-{args.x}"
        for path in save_figure(fig, args.out, stem.replace("/", "_"), formats):
            print(f"wrote {path}")
        return 0
    if args.paper:
        splits = SPLITS if args.test else ("train",)
        written, skipped = render_paper_figures(
            study, args.out, formats, splits, args.nc3, args.nc2_equinorm
        )
    else:
        written, skipped = render_figures(
            study, args.out, names, formats, args.nc3, args.nc2_equinorm
        )
    for paths in written.values():
        for path in paths:
            print(f"wrote {path}")
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if not written:
        print("ncrobust plot: no requested figure has data in these runs", file=sys.stderr)
        return 1
    return 0


__all__ = ["add_arguments", "run"]
