"""Shared drawing pieces of the paper's figures: a curve with its seed band, panel styling, saving.

Figures are built on :class:`matplotlib.figure.Figure` directly (the Agg canvas, no pyplot
state), so drawing works headless and in threads. A band is the mean ± std over seeds; its
``PolyCollection`` is labelled ``_band:<curve label>`` (hidden from legends, found by tests).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ncrobust.errors import UsageError

FORMATS = ("png", "pdf", "svg")
PANEL_SIZE = (2.7, 1.9)  # inches per panel: readable at paper size with 8 pt text
STYLE: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 6.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
}
# one colour per kind of data, the same in every figure
COLORS = {
    "clean": "tab:blue",
    "perturbed": "tab:red",
    "gaussian": "tab:olive",
    "targeted": "tab:purple",
    "network": "0.3",
}
# and one marker, z-order and width: curves that coincide (AT's clean and Gaussian, Fig. 2
# caption) stay visible, the thin clean line drawn over a wide pale Gaussian one
KIND_STYLES: dict[str, dict[str, Any]] = {
    "clean": {"marker": "o", "zorder": 3.0, "linewidth": 1.2},
    "perturbed": {"marker": "s", "zorder": 2.6, "linewidth": 1.2},
    "targeted": {"marker": "D", "zorder": 2.4, "linewidth": 1.2},
    "gaussian": {"marker": "^", "zorder": 2.0, "linewidth": 3.0, "alpha": 0.5},
}
# a cycle of markers for curves told apart by colour only (one per eps)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SPLIT_STYLES = {"train": "-", "test": "--"}
BAND_PREFIX = "_band:"
TWIN_LABEL = "_twin"  # the label of a panel's second y axis (not a panel of the grid)
MAX_MARKERS = 12  # a curve with more points gets a marker on every k-th point only


class MissingData(LookupError):
    """The data a figure needs was not measured; the figure is skipped with this reason."""


def new_figure(rows: int, cols: int, title: str) -> tuple[Figure, np.ndarray]:
    """A figure with a ``rows × cols`` grid of axes (always 2-D) sized for reading in print."""
    fig = Figure(
        figsize=(PANEL_SIZE[0] * cols + 0.4, PANEL_SIZE[1] * rows + 0.6),
        layout="constrained",
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.suptitle(title, fontsize=9)
    for ax in axes.flat:
        ax.tick_params(which="both", labelsize=STYLE["xtick.labelsize"])
        ax.xaxis.label.set_size(STYLE["axes.labelsize"])
        ax.yaxis.label.set_size(STYLE["axes.labelsize"])
        ax.title.set_size(STYLE["axes.titlesize"])
    return fig, axes


def plot_curve(
    ax: Axes,
    x: Sequence[float] | np.ndarray,
    mean: Sequence[float] | np.ndarray,
    std: Sequence[float] | np.ndarray | None,
    label: str,
    color: str,
    linestyle: str = "-",
    **style: Any,
) -> Line2D:
    """Draw ``mean`` against ``x`` and, where ``std`` is finite, the band mean ± std.

    ``style``: Line2D settings (marker, zorder, linewidth, alpha); markers are hollow, at most
    :data:`MAX_MARKERS` per curve.
    """
    x_arr = np.asarray(x, dtype=float)
    y = np.asarray(mean, dtype=float)
    settings: dict[str, Any] = {"marker": "o", "linewidth": 1.2} | style
    (line,) = ax.plot(
        x_arr,
        y,
        color=color,
        linestyle=linestyle,
        markersize=3.5,
        markerfacecolor="none",
        markevery=max(1, -(-len(x_arr) // MAX_MARKERS)),
        label=label,
        **settings,
    )
    if std is not None:
        s = np.asarray(std, dtype=float)
        finite = np.isfinite(s)
        if finite.any():
            band = ax.fill_between(
                x_arr,
                y - s,
                y + s,
                where=finite,
                color=color,
                alpha=0.2,
                linewidth=0,
                interpolate=False,
                zorder=1,
            )
            band.set_label(BAND_PREFIX + label)
    return line


def plot_series(
    ax: Axes,
    curve: pd.DataFrame,
    label: str,
    color: str,
    linestyle: str = "-",
    x: str = "epoch",
    **style: Any,
) -> Line2D | None:
    """Draw one aggregated series (columns ``x, mean, std``); nothing if it is empty."""
    if curve.empty:
        return None
    return plot_curve(
        ax,
        curve[x].to_numpy(dtype=float),
        curve["mean"].to_numpy(dtype=float),
        curve["std"].to_numpy(dtype=float),
        label,
        color,
        linestyle,
        **style,
    )


def plot_kind(
    ax: Axes, curve: pd.DataFrame, label: str, kind: str, split: str = "train", x: str = "epoch"
) -> Line2D | None:
    """Draw a series of one kind of data (clean, perturbed, gaussian, targeted) on one split
    in that kind's colour, marker and z-order and the split's line style."""
    return plot_series(
        ax, curve, label, COLORS[kind], SPLIT_STYLES[split], x, **KIND_STYLES.get(kind, {})
    )


def style_panel(
    ax: Axes,
    ylabel: str,
    xlabel: str | None = None,
    log: bool = False,
    title: str | None = None,
    integer_x: bool = True,
) -> None:
    """Label a panel; log scale only when it holds positive data (else a note says why not)."""
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=STYLE["axes.titlesize"])
    if not ax.get_lines():
        ax.text(
            0.5,
            0.5,
            "not measured",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="0.5",
            fontsize=STYLE["font.size"],
        )
        return
    if log:
        values = np.concatenate(
            [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
        )
        positive = values[np.isfinite(values) & (values > 0)]
        if positive.size:
            ax.set_yscale("log")
            log_axis(ax, positive)
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))  # labels never touch
    ax.grid(True, alpha=0.3, linewidth=0.5)


def log_axis(ax: Axes, positive: np.ndarray) -> None:
    """Legible log-scale y labels: plain numbers (0.2, 3, 10) at most every few decades
    (many decades: every k-th one), minor ticks labelled at 2× and 5× only when the data
    spans less than two decades (else unlabelled)."""
    ax.set_yscale("log")
    decades = math.log10(positive.max() / positive.min()) if positive.size else 0.0
    step = max(1, math.ceil(decades / 5))  # at most ~6 labelled decades per panel
    ax.yaxis.set_major_locator(LogLocator(base=10.0**step, numticks=8))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if decades < 2:
        ax.yaxis.set_minor_locator(LogLocator(base=10.0, subs=(2.0, 5.0)))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def add_legend(
    ax: Axes,
    title: str | None = None,
    above: bool = False,
    sources: Iterable[Axes] | None = None,
) -> None:
    """A legend of the labelled artists (bands excluded) of ``sources`` (default: ``ax``),
    each label once, if there are any.

    ``above`` puts it over the panel (the column's key, titled with the column's runs, drawn
    from every panel of the column) so it never hides a curve.
    """
    handles: list[Any] = []
    labels: list[str] = []
    for source in sources if sources is not None else (ax,):
        for handle, label in zip(*source.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if not handles:
        return
    placement: dict[str, Any] = {"loc": "best"}
    if above:
        ncol = 2 if max(len(label) for label in labels) <= 22 else 1  # fits the panel width
        placement = {"loc": "lower center", "bbox_to_anchor": (0.5, 1.02), "ncol": ncol}
    legend = ax.legend(
        handles,
        labels,
        frameon=False,
        fontsize=STYLE["legend.fontsize"],
        title=title,
        title_fontsize=STYLE["axes.titlesize"],
        **placement,
    )
    legend.set_in_layout(True)


def save_figure(
    fig: Figure, out_dir: str | Path, name: str, formats: Sequence[str] = ("png", "pdf")
) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.<format>`` for each format; returns the written paths."""
    formats = check_formats(formats)
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"figure name must be a plain file name, got {name!r}")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        fig.savefig(path, format=fmt, dpi=150)
        written.append(path)
    return written


def check_formats(formats: Sequence[str]) -> list[str]:
    """The requested file formats, refused with a clear message when unknown or empty."""
    chosen = [f.strip().lower().lstrip(".") for f in formats if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise UsageError(
            f"unknown figure format(s) {', '.join(unknown) or '(none given)'} "
            f"(choose from {', '.join(FORMATS)})"
        )
    return list(dict.fromkeys(chosen))
