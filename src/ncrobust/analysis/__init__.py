"""The documented analysis API in one place (a facade over probing/, evaluation/, study/ and
experiments/): measure and attack any model, sweep grids, aggregate seeds, figures, report."""

from ncrobust.evaluation.robust_accuracy import evaluate
from ncrobust.experiments.sweep import Grid, expand, run_sweep
from ncrobust.probing.measure import AttackSettings, list_layers, measure, measure_tables
from ncrobust.probing.taps import HookedExtractor
from ncrobust.study.aggregate import (
    RunGroup,
    aggregate_eps_study,
    aggregate_metrics,
    aggregate_stats,
    group_runs,
)
from ncrobust.study.drawing import MissingData, save_figure
from ncrobust.study.findings import Finding, Thresholds, Verdict, evaluate_findings
from ncrobust.study.loading import Run, find_run_dirs, load_run, load_runs
from ncrobust.study.paper_figures import PAPER_FIGURES, render_paper_figures
from ncrobust.study.plots import (
    FIGURES,
    figure2,
    figure3,
    figure4,
    figure7,
    figure11,
    figure12,
    figure15,
    figure16,
    figure_metrics,
    render_figures,
    write_figures,
)
from ncrobust.study.report import write_report
from ncrobust.study.study import Study, parse_where
from ncrobust.views import ViewLabel
from ncrobust.views import parse_label as parse_view

__all__ = [
    "FIGURES",
    "PAPER_FIGURES",
    "AttackSettings",
    "Finding",
    "Grid",
    "HookedExtractor",
    "MissingData",
    "Run",
    "RunGroup",
    "Study",
    "Thresholds",
    "Verdict",
    "ViewLabel",
    "aggregate_eps_study",
    "aggregate_metrics",
    "aggregate_stats",
    "evaluate",
    "evaluate_findings",
    "expand",
    "figure2",
    "figure3",
    "figure4",
    "figure7",
    "figure11",
    "figure12",
    "figure15",
    "figure16",
    "figure_metrics",
    "find_run_dirs",
    "group_runs",
    "list_layers",
    "load_run",
    "load_runs",
    "measure",
    "measure_tables",
    "parse_view",
    "parse_where",
    "render_figures",
    "render_paper_figures",
    "run_sweep",
    "save_figure",
    "write_figures",
    "write_report",
]
