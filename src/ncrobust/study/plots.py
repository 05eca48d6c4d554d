"""The paper's figures from a :class:`~ncrobust.study.study.Study`: one function per figure.

Each function returns a :class:`matplotlib.figure.Figure` whose curves are the seed means
(bands: mean ± std) of the aggregated tables, or raises :class:`MissingData` naming what was
not measured. :func:`write_figures` draws a list of them into a folder and skips, with a
logged note, those whose data is absent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ncrobust.errors import UsageError
from ncrobust.study.aggregate import RunGroup, format_eps
from ncrobust.study.drawing import (
    COLORS,
    MARKERS,
    STYLE,
    TWIN_LABEL,
    MissingData,
    add_legend,
    check_formats,
    new_figure,
    plot_kind,
    plot_series,
    save_figure,
    style_panel,
)
from ncrobust.study.findings.claims import BETWEEN_CLASS_ANGLE
from ncrobust.study.study import Study, simplex_angle
from ncrobust.views import FIT_VIEW, OUTPUT_LAYER, PENULTIMATE, SPLITS

__all__ = [
    "CAPTIONS",
    "FIGURES",
    "MissingData",
    "figure2",
    "figure3",
    "figure4",
    "figure7",
    "figure11",
    "figure12",
    "figure15",
    "figure16",
    "figure_metrics",
    "render_figures",
    "save_figure",
    "write_figures",
]

log = logging.getLogger("ncrobust.analysis")

# one name per quantity, in every figure (axis labels)
QUANTITIES = {
    "accuracy": "accuracy",
    "loss": "loss (CE)",
    "kl": "KL(clean ‖ perturbed)",
    "nc1": "NC1",
    "nc2_equinorm": "NC2 equinorm (std/mean)",
    "nc2_equinorm_std": "NC2 equinorm (std)",
    "nc2_equiangular": "NC2 equiangular",
    "nc3": "NC3 (paper text)",
    "nc3_frobenius": "NC3 (Frobenius)",
    "nc4": "NC4",
    "ncc_accuracy": "NCC accuracy",
    "ncc_match": "NCC–network matching",
    "simplex_similarity": "simplex similarity (rad)",
    "angular_distance": "angular distance (rad)",
}


def quantity(metric: str) -> str:
    """The axis name of a recorded metric (the metric's own name when it has none)."""
    return QUANTITIES.get(metric, metric)


# NC3 as the paper's curves were computed (the released code's Frobenius form) or as its text
NC3_FORMS = {
    "frobenius": ("nc3_frobenius", quantity("nc3_frobenius")),
    "text": ("nc3", quantity("nc3")),
}
# NC2 equinorm as std/mean (released code, ncrobust's nc2_equinorm) or the text's plain std
EQUINORM_FORMS = {
    "ratio": ("nc2_equinorm", quantity("nc2_equinorm")),
    "std": ("nc2_equinorm_std", quantity("nc2_equinorm_std")),
}
NORM_NAMES = {"linf": "l_inf", "l2": "l_2"}


def evolution_rows(
    nc3: str = "frobenius", equinorm: str = "ratio"
) -> tuple[tuple[str, str, str, bool], ...]:
    """(metric, layer: "output" or the feature layer, y label, log scale) of the epoch-wise
    figures, with the chosen NC3 and NC2-equinorm forms."""
    if nc3 not in NC3_FORMS:
        raise UsageError(f"unknown NC3 form {nc3!r} (choose from {', '.join(NC3_FORMS)})")
    if equinorm not in EQUINORM_FORMS:
        raise UsageError(
            f"unknown NC2 equinorm form {equinorm!r} (choose from {', '.join(EQUINORM_FORMS)})"
        )
    nc3_metric, nc3_label = NC3_FORMS[nc3]
    norm_metric, norm_label = EQUINORM_FORMS[equinorm]
    return (
        ("accuracy", OUTPUT_LAYER, quantity("accuracy"), False),
        ("loss", OUTPUT_LAYER, quantity("loss"), False),
        ("nc1", PENULTIMATE, quantity("nc1"), True),
        (norm_metric, PENULTIMATE, norm_label, True),
        ("nc2_equiangular", PENULTIMATE, quantity("nc2_equiangular"), True),
        (nc3_metric, PENULTIMATE, nc3_label, True),
        ("nc4", PENULTIMATE, quantity("nc4"), False),
    )


EVOLUTION_ROWS = evolution_rows()
EPS_ROWS = tuple(row for row in EVOLUTION_ROWS if row[0] != "accuracy")


def _title(group: RunGroup) -> str:
    seeds = len(group.runs)
    return f"{group.label} ({seeds} seed{'s' if seeds != 1 else ''})"


def setting_text(groups: Sequence[RunGroup]) -> str:
    """The drawn runs' data, model, norm and eps (``digits · small_cnn · l_inf eps=0.15``);
    several values are joined by ``/`` (eps by ``, ``)."""

    def values(name: str) -> list[str]:
        return list(dict.fromkeys(str(getattr(g.config, name)) for g in groups))

    threats = []
    for norm in values("norm"):
        radii = sorted({float(g.config.eps) for g in groups if g.config.norm == norm})
        threats.append(f"{NORM_NAMES.get(norm, norm)} eps={', '.join(map(format_eps, radii))}")
    return " · ".join(["/".join(values("dataset")), "/".join(values("model")), "; ".join(threats)])


def _distinct(groups: Iterable[RunGroup]) -> list[RunGroup]:
    """Each group once, in first-seen order."""
    return list({g.label: g for g in groups}.values())


def _heading(title: str, groups: Sequence[RunGroup]) -> str:
    """A figure's title with a second line naming the data, model, norm and eps drawn."""
    return f"{title}\n{setting_text(groups)}"


def _views(study: Study, label: str, split: str) -> list[tuple[str, str, str]]:
    """(view, curve name, colour key) of the clean, perturbed and Gaussian curves of a split."""
    out = []
    if study.has(label, split, "clean"):
        out.append(("clean", "clean", "clean"))
    perturbed = study.perturbed_view(label, split)
    if perturbed is not None:
        out.append((perturbed, f"perturbed ({perturbed})", "perturbed"))
    if study.has(label, split, "gaussian"):
        out += GAUSSIAN
    return out


GAUSSIAN = (("gaussian", "gaussian", "gaussian"),)


def _layer(metric_layer: str, layer: str) -> str:
    return OUTPUT_LAYER if metric_layer == OUTPUT_LAYER else layer


# -- Figures 2 and 4: accuracy, loss and NC vs epoch ------------------------------------------


def evolution_figure(
    study: Study,
    modes: Sequence[str],
    title: str,
    layer: str = PENULTIMATE,
    splits: Sequence[str] = SPLITS,
    nc3: str = "frobenius",
    equinorm: str = "ratio",
) -> Figure:
    """Accuracy, loss and NC vs epoch, one column per group of ``modes`` (the layout of
    Figures 2, 4, 5, 6, 8 and 9); TRADES columns show the KL term in the loss panel."""
    rows_spec = evolution_rows(nc3, equinorm)
    groups = [g for g in study.groups_of(modes) if study.has(g.label, "train", "clean", layer)]
    if not groups:
        names = "/".join(m.upper() for m in modes)
        raise MissingData(f"no {names} run with {layer!r} NC measured on clean training data")
    fig, axes = new_figure(len(rows_spec), len(groups), _heading(title, groups))
    for col, group in enumerate(groups):
        keyed = []  # the panels whose curves the column's key names (not the KL panel)
        for row, (metric, where, ylabel, log_scale) in enumerate(rows_spec):
            ax = axes[row, col]
            xlabel = "epoch" if row == len(rows_spec) - 1 else None
            if group.mode == "trades" and metric == "loss":
                _kl_panel(ax, study, group.label, splits, xlabel)
                continue
            keyed.append(ax)
            for split in splits:
                for view, name, kind in _views(study, group.label, split):
                    curve = study.series(group.label, split, view, _layer(where, layer), metric)
                    plot_kind(ax, curve, f"{name} · {split}", kind, split)
            style_panel(ax, ylabel, xlabel=xlabel, log=log_scale)
        add_legend(axes[0, col], _title(group), above=True, sources=keyed)
    return fig


def _kl_panel(
    ax: Axes, study: Study, label: str, splits: Sequence[str], xlabel: str | None
) -> None:
    """TRADES' loss panel: the training objective's KL per epoch and the probes' KL per view
    (log scale), the targeted attack's much larger KL on a right axis of its own; the panel
    has its own legend."""
    fit = study.series(label, "train", FIT_VIEW, OUTPUT_LAYER, "kl_loss")
    plot_series(ax, fit, "training KL (train_adv, every epoch)", COLORS["network"], marker=None)
    twin: Axes | None = None
    for split in splits:
        for view, name, kind in (("pgd", "perturbed (pgd)", "perturbed"), *GAUSSIAN):
            curve = study.series(label, split, view, OUTPUT_LAYER, "kl")
            plot_kind(ax, curve, f"{name} · {split}", kind, split)
        targeted = study.targeted_view(label, split)
        curve = (
            study.series(label, split, targeted, OUTPUT_LAYER, "kl") if targeted else pd.DataFrame()
        )
        if len(curve):
            if twin is None:
                twin = ax.twinx()
                twin.set_label(TWIN_LABEL)
                twin.tick_params(which="both", labelsize=STYLE["ytick.labelsize"])
                twin.yaxis.label.set_fontsize(STYLE["axes.labelsize"])
            name = f"targeted ({targeted}) · {split}, right axis"
            plot_kind(twin, curve, name, "targeted", split)
    style_panel(ax, quantity("kl"), xlabel=xlabel, log=True)
    if twin is not None:
        style_panel(twin, "targeted KL", log=True)
        twin.grid(False)
    add_legend(ax, above=True, sources=[ax] if twin is None else [ax, twin])


def figure2(
    study: Study,
    layer: str = PENULTIMATE,
    splits: Sequence[str] = SPLITS,
    nc3: str = "frobenius",
    equinorm: str = "ratio",
    title: str = "Figure 2 — accuracy, loss and NC, ST and AT",
) -> Figure:
    """Figure 2: accuracy, loss, NC1–NC4 vs epoch for ST and AT; clean / perturbed / Gaussian.

    Perturbed is ``train_adv`` for AT when measured (the paper's choice), else ``pgd``; train
    data solid, test dashed; NC1, NC2 and NC3 on log scale; NC3 in the Frobenius form the
    paper's curves were computed with (``nc3="text"``: the form of its Appendix B.2).
    """
    return evolution_figure(study, ("st", "at"), title, layer, splits, nc3, equinorm)


def figure4(
    study: Study,
    layer: str = PENULTIMATE,
    splits: Sequence[str] = SPLITS,
    nc3: str = "frobenius",
    equinorm: str = "ratio",
    title: str = "Figure 4 — accuracy, KL loss and NC, TRADES",
) -> Figure:
    """Figure 4: as Figure 2 for TRADES, with the KL term in the loss panel (as the paper)."""
    return evolution_figure(study, ("trades",), title, layer, splits, nc3, equinorm)


# -- Figure 3: simplex similarity and angular distance to the clean simplex -------------------

ANGLE_ROWS = (
    ("simplex_similarity", "simplex similarity (rad)"),
    ("angular_distance", "angular distance (rad)"),
)


def _compared_view(study: Study, group: RunGroup, split: str) -> str | None:
    """ST: the targeted attack (grouped by target); AT/TRADES: the perturbed view."""
    if group.mode == "st":
        return study.targeted_view(group.label, split)
    return study.perturbed_view(group.label, split)


def _has_comparison(study: Study, group: RunGroup, splits: Sequence[str], layer: str) -> bool:
    for split in splits:
        view = _compared_view(study, group, split)
        if view is not None and study.has(group.label, split, view, layer):
            return True
    return False


def figure3(
    study: Study,
    layer: str = PENULTIMATE,
    splits: Sequence[str] = SPLITS,
    modes: Sequence[str] = ("st", "at"),
    title: str = "Figure 3 — distance to the clean simplex",
) -> Figure:
    """Figure 3: simplex similarity and non-centred angular distance to the clean train means,
    in the paper's column order: ST's two panels (left, inner left), then AT's.

    ST compares targeted-attack class means (grouped by target) with the clean ones, AT the
    perturbed (``train_adv``) class means. The centred panel's dotted line is the simplex angle
    arccos(-1/(C-1)) between two classes; the non-centred panel's is the run's own angle
    between different clean class means (``between_class_angle``, when recorded), the baseline
    of a non-centred angle.
    """
    groups = [g for g in study.groups_of(modes) if _has_comparison(study, g, splits, layer)]
    if not groups:
        raise MissingData(
            "no targeted view (ST) or perturbed view (AT) with NC measured: "
            "train or measure with --views including targeted (ST) / train_adv (AT)"
        )
    groups.sort(key=lambda g: list(modes).index(g.mode))  # the paper's order: ST, then AT
    fig, axes = new_figure(1, len(ANGLE_ROWS) * len(groups), _heading(title, groups))
    for g, group in enumerate(groups):
        classes = study.num_classes(group.label)
        for j, (metric, ylabel) in enumerate(ANGLE_ROWS):
            ax = axes[0, len(ANGLE_ROWS) * g + j]
            for split in splits:
                view = _compared_view(study, group, split)
                if view is None:
                    continue
                curve = study.series(group.label, split, view, layer, metric)
                kind = "targeted" if view.startswith("targeted") else "perturbed"
                plot_kind(ax, curve, f"{view} vs clean · {split}", kind, split)
            if ax.get_lines() and metric == "simplex_similarity" and classes and classes > 1:
                ax.axhline(
                    simplex_angle(classes),
                    color="0.5",
                    linestyle=":",
                    linewidth=1,
                    label=f"arccos(−1/(C−1)), C={classes}",
                )
            if ax.get_lines() and metric == "angular_distance":
                _between_class_baseline(ax, study, group.label, layer)
            style_panel(ax, ylabel, xlabel="epoch")
            add_legend(ax, _title(group), above=True)
    return fig


def _between_class_baseline(ax: Axes, study: Study, label: str, layer: str) -> None:
    """The run's non-centred angle between different clean class means over epochs, or a note
    that it was not recorded."""
    curve = study.series(label, "train", "clean", layer, BETWEEN_CLASS_ANGLE)
    if curve.empty:
        ax.text(
            0.02,
            0.02,
            "between-class baseline not recorded",
            transform=ax.transAxes,
            color="0.5",
            fontsize=6,
        )
        return
    plot_series(ax, curve, BETWEEN_NAME, "0.5", ":", marker=None)


BETWEEN_NAME = "between clean class means (non-centred)"


# -- Figure 7: the attack illustration, per class, at the last epoch --------------------------

# (statistic names (first found is used), panel title, y label)
STAT_PANELS = (
    (("predicted_count", "counts"), "predicted labels of perturbed data", "examples"),
    (("clean_mean_norm",), "norms of clean class means", "‖μ_c‖"),
    (("predicted_mean_norm",), "norms of perturbed predicted-class means", "‖μ′_c‖"),
    (("angle",), "angle between μ_c and μ′_c", "angle (rad)"),
)


def figure7(
    study: Study,
    view: str = "pgd",
    split: str = "train",
    layer: str = PENULTIMATE,
    modes: Sequence[str] = ("st",),
    title: str = "Figure 7 — untargeted attack, per class",
) -> Figure:
    """Figure 7: predicted-label histogram, clean and predicted class-mean norms, and the angle
    between clean and predicted class means of perturbed data, per class, at the last epoch.

    The angle panel's baseline is the run's non-centred angle between different clean class
    means (``between_class_angle``, the baseline of finding 7), or arccos(-1/(C-1)) as the
    paper's caption when the run did not record it (said in the legend).
    """
    stats = study.stats
    chosen = stats[(stats["split"] == split) & (stats["view"] == view) & (stats["layer"] == layer)]
    groups = [g for g in study.groups_of(modes) if (chosen["group"] == g.label).any()]
    if not groups:
        kinds = "/".join(m.upper() for m in modes)
        raise MissingData(f"no attack statistics for view {view!r} on {split} data in {kinds} runs")
    fig, axes = new_figure(len(groups), len(STAT_PANELS), _heading(title, groups))
    for row, group in enumerate(groups):
        rows = chosen[chosen["group"] == group.label]
        epoch = int(rows["epoch"].max())
        rows = rows[rows["epoch"] == epoch]
        classes = study.num_classes(group.label)
        for col, (names, panel, ylabel) in enumerate(STAT_PANELS):
            ax = axes[row, col]
            statistic = next((n for n in names if (rows["statistic"] == n).any()), names[0])
            data = rows[rows["statistic"] == statistic].sort_values("class")
            std = data["std"].to_numpy(dtype=float)
            ax.bar(
                data["class"].to_numpy(),
                data["mean"].to_numpy(dtype=float),
                yerr=np.nan_to_num(std) if np.isfinite(std).any() else None,
                color=COLORS["perturbed"] if statistic != "clean_mean_norm" else COLORS["clean"],
                width=0.8,
                capsize=1.5,
                error_kw={"linewidth": 0.6},
            )
            if statistic == "angle":
                _leap_baseline(ax, study, group.label, split, layer, epoch, classes)
            ax.set_ylabel(ylabel)
            ax.set_xlabel("class")
            head = f"{_title(group)} · {view} on {split} · epoch {epoch}\n" if col == 0 else "\n"
            ax.set_title(head + panel, loc="left", fontsize=8)
    return fig


def _leap_baseline(
    ax: Axes, study: Study, label: str, split: str, layer: str, epoch: int, classes: int | None
) -> None:
    between = study.value(label, split, "clean", layer, BETWEEN_CLASS_ANGLE, epoch)
    if math.isfinite(between):
        value, name = between, BETWEEN_NAME
    elif classes and classes > 1:
        value, name = simplex_angle(classes), "arccos(−1/(C−1)) (non-centred angle not recorded)"
    else:
        return
    ax.axhline(value, color="0.3", linestyle=":", linewidth=1, label=name)
    add_legend(ax)


# -- Figures 11 and 12: layerwise NC and NCC at the last layerwise epoch ----------------------


def _layerwise_columns(
    study: Study, modes: Sequence[str], splits: Sequence[str] = SPLITS
) -> list[tuple[RunGroup, str, int]]:
    columns = []
    for group in study.groups_of(modes):
        epoch = study.layerwise_epoch(group.label)
        if epoch is None:
            continue
        columns += [(group, s, epoch) for s in splits if study.has(group.label, s, "clean")]
    if not columns:
        raise MissingData(
            "no layerwise measurement (more than one layer at one epoch): "
            "train with --final-layers all or measure with --layers all"
        )
    return columns


def _depth_axis(ax: Axes, order: list[str], with_labels: bool) -> None:
    ax.set_xticks(range(1, len(order) + 1))
    if with_labels:
        ax.set_xticklabels(order, rotation=45, ha="right", fontsize=6)
        ax.set_xlabel("layer (depth order)")
    else:
        ax.set_xticklabels([])


LAYER_NC_ROWS = tuple(
    (metric, quantity(metric), log_scale)
    for metric, log_scale in (
        ("nc1", True),
        ("nc2_equinorm", True),
        ("nc2_equiangular", True),
        ("nc4", False),
    )
)


def _layer_views(study: Study, label: str, split: str, epoch: int) -> list[tuple[str, str, str]]:
    """(view, curve name, colour key) of the clean and perturbed layerwise curves: the
    perturbed view measured at every layer (``pgd`` for an AT run measured after training,
    whose ``train_adv`` has the penultimate layer only)."""
    out = []
    if study.has(label, split, "clean"):
        out.append(("clean", "clean", "clean"))
    view = study.layerwise_perturbed_view(label, split, epoch)
    if view is not None:
        out.append((view, f"perturbed ({view})", "perturbed"))
    return out


def figure11(
    study: Study,
    modes: Sequence[str] = ("st", "at"),
    splits: Sequence[str] = SPLITS,
    title: str = "Figure 11 — layerwise NC",
) -> Figure:
    """Figure 11: NC1, NC2 and NC4 against layer depth, clean and perturbed, train and test."""
    columns = _layerwise_columns(study, modes, splits)
    groups = _distinct(group for group, _, _ in columns)
    fig, axes = new_figure(len(LAYER_NC_ROWS), len(columns), _heading(title, groups))
    for col, (group, split, epoch) in enumerate(columns):
        order = study.layer_order(group.label)
        for row, (metric, ylabel, log_scale) in enumerate(LAYER_NC_ROWS):
            ax = axes[row, col]
            for view, name, kind in _layer_views(study, group.label, split, epoch):
                curve = study.layer_curve(group.label, epoch, split, view, metric)
                plot_kind(ax, curve, name, kind, split, x="depth")
            last = row == len(LAYER_NC_ROWS) - 1
            style_panel(
                ax,
                ylabel,
                log=log_scale,
            )
            _depth_axis(ax, order, last)
        add_legend(
            axes[0, col],
            f"{_title(group)} · {split} · epoch {epoch}",
            above=True,
            sources=axes[:, col],
        )
    return fig


def _ncc_match(study: Study, label: str, epoch: int, split: str, view: str) -> pd.DataFrame:
    curve = study.layer_curve(label, epoch, split, view, "ncc_match")
    if curve.empty and (split, view) == ("train", "clean"):
        # the clean train means are this view's own means, so its NCC match is 1 - NC4
        curve = study.layer_curve(label, epoch, split, view, "nc4")
        curve = curve.assign(mean=1.0 - curve["mean"])
    return curve


def figure12(
    study: Study,
    modes: Sequence[str] = ("st", "at"),
    splits: Sequence[str] = SPLITS,
    title: str = "Figure 12 — layerwise NCC classifier",
) -> Figure:
    """Figure 12: NCC accuracy, NCC robustness (NCC accuracy on perturbed data) and NCC-network
    matching against layer depth; dotted lines are the network's own accuracies.
    """
    columns = _layerwise_columns(study, modes, splits)
    groups = _distinct(group for group, _, _ in columns)
    fig, axes = new_figure(2, len(columns), _heading(title, groups))
    for col, (group, split, epoch) in enumerate(columns):
        order = study.layer_order(group.label)
        views = _layer_views(study, group.label, split, epoch)
        acc_ax, match_ax = axes[0, col], axes[1, col]
        for view, _, kind in views:
            ncc_name = "NCC robustness" if kind == "perturbed" else "NCC accuracy"
            curve = study.layer_curve(group.label, epoch, split, view, "ncc_accuracy")
            plot_kind(acc_ax, curve, f"{ncc_name} ({view})", kind, split, x="depth")
            curve = _ncc_match(study, group.label, epoch, split, view)
            plot_kind(match_ax, curve, f"NCC–net match ({view})", kind, split, x="depth")
        if acc_ax.get_lines():
            for view, _, colour in views:
                net = study.value(group.label, split, view, OUTPUT_LAYER, "accuracy", epoch)
                if math.isfinite(net):
                    acc_ax.axhline(
                        net,
                        color=COLORS[colour],
                        linestyle=":",
                        linewidth=1,
                        label=f"network accuracy ({view})",
                    )
        style_panel(acc_ax, quantity("ncc_accuracy"))
        style_panel(match_ax, quantity("ncc_match"))
        _depth_axis(acc_ax, order, False)
        _depth_axis(match_ax, order, True)
        add_legend(acc_ax, f"{_title(group)} · {split} · epoch {epoch}", above=True)
        add_legend(match_ax)
    return fig


# -- Figures 15 and 16: the small-eps study ---------------------------------------------------


def _eps_styles(values: Iterable[float]) -> dict[float, dict[str, str]]:
    """One colour and marker per eps (colour and marker both change with eps)."""
    ordered = sorted(set(values))
    cmap = colormaps["plasma"]  # purple to yellow: never confused with the blue clean curve
    span = max(len(ordered) - 1, 1)
    return {
        v: {"color": _hex(cmap(0.85 * i / span)), "marker": MARKERS[(i + 1) % len(MARKERS)]}
        for i, v in enumerate(ordered)
    }


def _eps_curve(ax: Axes, curve: pd.DataFrame, label: str, style: dict[str, str]) -> None:
    plot_series(ax, curve, label, style["color"], marker=style["marker"])


def _hex(rgba: tuple[float, float, float, float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3])


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9)


def figure15(
    study: Study,
    eval_eps: float | None = None,
    split: str = "train",
    layer: str = PENULTIMATE,
    view: str = "pgd",
    nc3: str = "frobenius",
    equinorm: str = "ratio",
    title: str = "Figure 15 — AT trained at several eps",
) -> Figure:
    """Figure 15: loss and NC vs epoch of AT runs trained at several eps (one colour each).

    The perturbed column uses PGD at one common radius ``eval_eps`` (default: the family's
    largest training eps, as the paper's 8/255): an in-training ``pgd@eps=...`` view, the
    run's ``eps_study.parquet``, or its own ``pgd`` when trained at that eps; a run without
    it shows its own perturbed view at its training eps, said in the legend. The column's
    header states the eps actually plotted.
    """
    families = study.eps_families(("at",))
    if not families:
        raise MissingData("no AT runs that differ only in their training eps")
    rows_spec = tuple(r for r in evolution_rows(nc3, equinorm) if r[0] != "accuracy")
    drawn = [g for family in families for g in family]
    fig, axes = new_figure(len(rows_spec), 2 * len(families), _heading(title, drawn))
    for f, family in enumerate(families):
        styles = _eps_styles(g.config.eps for g in family)
        common = max(g.config.eps for g in family) if eval_eps is None else eval_eps
        plotted: set[str] = set()
        for row, (metric, where, ylabel, log_scale) in enumerate(rows_spec):
            clean_ax, pert_ax = axes[row, 2 * f], axes[row, 2 * f + 1]
            for group in family:
                name = f"train eps={format_eps(group.config.eps)}"
                style = styles[group.config.eps]
                where_layer = _layer(where, layer)
                curve = study.series(group.label, split, "clean", where_layer, metric)
                _eps_curve(clean_ax, curve, name, style)
                curves = study.eps_series(group.label, split, view, where_layer, metric)
                found = [c for e, c in curves.items() if _close(e, common)]
                if found:
                    curve = found[0]
                    plotted.add(f"{view} eps={format_eps(common)}")
                else:
                    own = study.perturbed_view(group.label, split)
                    if own is None:
                        continue
                    curve = study.series(group.label, split, own, where_layer, metric)
                    name = f"{name} ({own} at training eps)"
                    if len(curve):
                        plotted.add(f"{own} at training eps")
                _eps_curve(pert_ax, curve, name, style)
            xlabel = "epoch" if row == len(rows_spec) - 1 else None
            style_panel(clean_ax, ylabel, xlabel, log_scale)
            style_panel(pert_ax, ylabel, xlabel, log_scale)
        base = family[0].label.split(" · eps=")[0]
        add_legend(axes[0, 2 * f], f"{base} · clean · {split}", above=True)
        shown = "; ".join(sorted(plotted)) or "not measured"
        add_legend(axes[0, 2 * f + 1], f"{base} · perturbed ({shown}) · {split}", above=True)
    return fig


def figure16(
    study: Study,
    split: str = "train",
    layer: str = PENULTIMATE,
    view: str = "pgd",
    nc3: str = "frobenius",
    equinorm: str = "ratio",
    title: str = "Figure 16 — ST attacked at several eps",
) -> Figure:
    """Figure 16: loss and NC vs epoch of ST runs attacked at several eps (one colour per
    evaluation eps) next to clean data: from the in-training ``pgd@eps=...`` views (a point
    at every measured epoch), else ``eps_study.parquet``, plus ``pgd`` at the run's own eps.
    Beside each group, the same metrics against eps at the last epoch all curves share.
    """
    groups = [g for g in study.groups_of(("st",)) if study.has_eps_study(g.label, split, view)]
    if not groups:
        raise MissingData(
            "no small-eps study of an ST run: train with views pgd@eps=2/255,... or run "
            "`ncrobust measure --eps 2/255,4/255,8/255 RUN`"
        )
    rows_spec = tuple(r for r in evolution_rows(nc3, equinorm) if r[0] != "accuracy")
    fig, axes = new_figure(len(rows_spec), 2 * len(groups), _heading(title, groups))
    for g, group in enumerate(groups):
        epoch_col, eps_col = 2 * g, 2 * g + 1
        eps_values: set[float] = set()
        for metric, where, _, _ in rows_spec:
            eps_values |= set(
                study.eps_series(group.label, split, view, _layer(where, layer), metric)
            )
        styles = _eps_styles(eps_values)
        last = None
        for row, (metric, where, ylabel, log_scale) in enumerate(rows_spec):
            ax, by_eps = axes[row, epoch_col], axes[row, eps_col]
            where_layer = _layer(where, layer)
            clean = study.series(group.label, split, "clean", where_layer, metric)
            plot_kind(ax, clean, "clean", "clean", split)
            curves = study.eps_series(group.label, split, view, where_layer, metric)
            for eps, curve in curves.items():
                _eps_curve(ax, curve, f"{view} eps={format_eps(eps)}", styles[eps])
            last = _against_eps(by_eps, clean, curves) or last
            bottom = row == len(rows_spec) - 1
            style_panel(ax, ylabel, "epoch" if bottom else None, log_scale)
            eps_label = "attack eps (0: clean)" if bottom else None
            style_panel(by_eps, ylabel, eps_label, log_scale, integer_x=False)
            _eps_axis(by_eps, sorted(curves), bottom)
        add_legend(axes[0, epoch_col], f"{_title(group)} · {split}", above=True)
        head = f"{_title(group)} · {split} · epoch {last}" if last is not None else _title(group)
        add_legend(axes[0, eps_col], head, above=True, sources=axes[:, eps_col])
    return fig


def _against_eps(ax: Axes, clean: pd.DataFrame, curves: dict[float, pd.DataFrame]) -> int | None:
    """One metric against the attack's eps (clean data at eps 0) at the last epoch every
    curve has; returns that epoch (None when the curves share none)."""
    frames = [c for c in (clean, *curves.values()) if len(c)]
    if not curves or not frames:
        return None
    shared = set.intersection(*(set(c["epoch"].astype(int)) for c in frames))
    if not shared:
        return None
    epoch = max(shared)
    points = [(0.0, clean)] if len(clean) else []
    points += list(curves.items())
    rows = [(eps, c[c["epoch"] == epoch].iloc[0]) for eps, c in points]
    plot_series(
        ax,
        pd.DataFrame(
            {
                "eps": [eps for eps, _ in rows],
                "mean": [float(r["mean"]) for _, r in rows],
                "std": [float(r["std"]) for _, r in rows],
            }
        ),
        f"epoch {epoch}",
        COLORS["network"],
        x="eps",
    )
    return epoch


def _eps_axis(ax: Axes, radii: list[float], with_labels: bool) -> None:
    """Ticks at clean (0) and each attack radius, labelled as the paper writes eps."""
    if not ax.get_lines():
        return
    ticks = [0.0, *radii]
    ax.set_xticks(ticks)
    ax.set_xticklabels(
        ["0", *map(format_eps, radii)] if with_labels else [], rotation=45, ha="right"
    )


# -- any recorded metric against epoch or depth -------------------------------------------------


def check_metrics(study: Study, metrics: Sequence[str]) -> list[str]:
    """The requested metric names, refused unless some run recorded each."""
    chosen = list(dict.fromkeys(m.strip() for m in metrics if m.strip()))
    if not chosen:
        raise UsageError("--metrics: give at least one metric name")
    recorded = study.metric_names()
    unknown = [m for m in chosen if m not in recorded]
    if unknown:
        raise UsageError(
            f"metric(s) {', '.join(unknown)} not recorded in these runs "
            f"(recorded: {', '.join(recorded) or 'none'})"
        )
    return chosen


def _metric_layer(study: Study, label: str, metric: str, layer: str) -> str:
    rows = study.rows(label)
    layers = set(rows.loc[rows["metric"] == metric, "layer"].astype(str))
    return layer if layer in layers or OUTPUT_LAYER not in layers else OUTPUT_LAYER


def figure_metrics(
    study: Study,
    metrics: Sequence[str],
    x: str = "epoch",
    splits: Sequence[str] = SPLITS,
    layer: str = PENULTIMATE,
    log: bool = True,
) -> Figure:
    """Any recorded metrics (one row each) against epoch (at ``layer``) or layer depth (at the
    last layerwise epoch), one column per group; clean / perturbed / Gaussian as in Figure 2.

    E.g. Figure 2 with CDNV in place of NC1: ``figure_metrics(study, ["cdnv"])``.
    """
    if x not in ("epoch", "depth"):
        raise UsageError(f"x must be 'epoch' or 'depth', got {x!r}")
    chosen = check_metrics(study, metrics)
    groups = [g for g in study.groups if any(study.has(g.label, sp, "clean") for sp in splits)]
    if not groups:
        raise MissingData("no run with clean data measured on the chosen splits")
    title = f"{', '.join(map(quantity, chosen))} against {x}"
    fig, axes = new_figure(len(chosen), len(groups), _heading(title, groups))
    for col, group in enumerate(groups):
        epoch = study.layerwise_epoch(group.label) if x == "depth" else None
        for row, metric in enumerate(chosen):
            ax = axes[row, col]
            for split in splits:
                views = (
                    _views(study, group.label, split)
                    if x == "epoch" or epoch is None
                    else _layer_views(study, group.label, split, epoch)
                )
                for view, name, kind in views:
                    if x == "epoch":
                        where = _metric_layer(study, group.label, metric, layer)
                        curve = study.series(group.label, split, view, where, metric)
                    elif epoch is None:
                        continue
                    else:
                        curve = study.layer_curve(group.label, epoch, split, view, metric)
                    plot_kind(ax, curve, f"{name} · {split}", kind, split, x=x)
            style_panel(ax, quantity(metric), x if row == len(chosen) - 1 else None, log=log)
            if x == "depth" and ax.get_lines():
                _depth_axis(ax, study.layer_order(group.label), row == len(chosen) - 1)
        head = _title(group) + (f" · epoch {epoch}" if epoch is not None else "")
        add_legend(axes[0, col], head, above=True, sources=axes[:, col])
    return fig


# -- registry and batch drawing ---------------------------------------------------------------

FIGURES: dict[str, Callable[[Study], Figure]] = {
    "fig2": figure2,
    "fig3": figure3,
    "fig4": figure4,
    "fig7": figure7,
    "fig11": figure11,
    "fig12": figure12,
    "fig15": figure15,
    "fig16": figure16,
}

CAPTIONS = {
    "fig2": "Figure 2: accuracy, loss and NC vs epoch for ST and AT on clean, perturbed and "
    "Gaussian data (train solid, test dashed; mean ± std over seeds; NC3 in the Frobenius "
    "form of the released code).",
    "fig3": "Figure 3: simplex similarity and non-centred angular distance to the clean train "
    "class means: targeted attack (ST), perturbed training data (AT). Dotted: arccos(-1/(C-1)) "
    "on the centred panel; the run's own angle between clean classes on the non-centred one.",
    "fig4": "Figure 4: accuracy, KL loss and NC vs epoch for TRADES.",
    "fig7": "Figure 7: untargeted attack per class at the last epoch: predicted labels, clean "
    "and predicted class-mean norms, angle between them (dotted: the run's non-centred angle "
    "between clean class means).",
    "fig11": "Figure 11: layerwise NC1, NC2 and NC4, clean and perturbed, at the last "
    "layerwise epoch.",
    "fig12": "Figure 12: layerwise NCC accuracy, NCC robustness and NCC-network matching "
    "(dotted: the network's own accuracy).",
    "fig15": "Figure 15: AT trained at several eps (colour: training eps), perturbed data at "
    "one common radius; the perturbed column's header states the eps plotted.",
    "fig16": "Figure 16: ST attacked at several eps over epochs (colour: evaluation eps), and "
    "against eps at the last epoch (clean at eps 0).",
}


def figure_names(names: Iterable[str]) -> list[str]:
    """Validated figure names (``all`` expands to every figure), in the registry's order."""
    chosen = {n.strip().lower() for n in names if n.strip()}
    if not chosen or "all" in chosen:
        return list(FIGURES)
    unknown = sorted(chosen - set(FIGURES))
    if unknown:
        raise UsageError(
            f"unknown figure(s) {', '.join(unknown)} (choose from {', '.join(FIGURES)} or all)"
        )
    return [n for n in FIGURES if n in chosen]


# the figures with an NC3 panel (drawn in the form chosen by ``nc3``)
NC3_FIGURES = ("fig2", "fig4", "fig15", "fig16")


def render_figures(
    study: Study,
    out_dir: str | Path,
    names: Iterable[str] = tuple(FIGURES),
    formats: Sequence[str] = ("png",),
    nc3: str = "frobenius",
    equinorm: str = "ratio",
) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Draw and save each named figure; returns ({name: files}, {name: reason skipped})."""
    chosen = figure_names(names)
    formats = check_formats(formats)
    evolution_rows(nc3, equinorm)  # an unknown form is refused before drawing
    written: dict[str, list[Path]] = {}
    skipped: dict[str, str] = {}
    for name in chosen:
        try:
            draw = FIGURES[name]
            fig = (
                draw(study, nc3=nc3, equinorm=equinorm)  # type: ignore[call-arg]
                if name in NC3_FIGURES
                else draw(study)
            )
        except MissingData as exc:
            skipped[name] = str(exc)
            continue
        written[name] = save_figure(fig, out_dir, name, formats)
    return written, skipped


def write_figures(
    run_dirs: Iterable[str | Path] | Study,
    out_dir: str | Path,
    names: Iterable[str] = tuple(FIGURES),
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Draw the named figures of ``run_dirs`` into ``out_dir`` (e.g. ``DIR/figures``).

    Figures whose data was not measured are skipped with a logged warning; the written files
    are returned.
    """
    names = figure_names(names)
    formats = check_formats(formats)
    study = run_dirs if isinstance(run_dirs, Study) else Study.from_paths(run_dirs)
    written, skipped = render_figures(study, out_dir, names, formats)
    for name, reason in skipped.items():
        log.warning("skipped %s: %s", name, reason)
    return [path for paths in written.values() for path in paths]
