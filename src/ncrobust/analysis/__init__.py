"""Analysis of runs: measure and attack any model, sweep grids, aggregate seeds, figures, report."""

from ncrobust.analysis.aggregate import (
    RunGroup,
    aggregate_eps_study,
    aggregate_metrics,
    aggregate_stats,
    group_runs,
)
from ncrobust.analysis.drawing import MissingData, save_figure
from ncrobust.analysis.findings import Finding, Thresholds, Verdict, evaluate_findings
from ncrobust.analysis.loading import Run, find_run_dirs, load_run, load_runs
from ncrobust.analysis.measure import AttackSettings, list_layers, measure, measure_tables
from ncrobust.analysis.paper_figures import PAPER_FIGURES, render_paper_figures
from ncrobust.analysis.plots import (
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
from ncrobust.analysis.report import write_report
from ncrobust.analysis.robust_accuracy import evaluate
from ncrobust.analysis.study import Study, parse_where
from ncrobust.analysis.sweep import Grid, expand, run_sweep
from ncrobust.analysis.taps import HookedExtractor
from ncrobust.analysis.views import ViewLabel, parse_view

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
