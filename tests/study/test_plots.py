"""Every figure renders from hand-made tables and draws exactly the aggregated numbers."""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ncrobust.analysis import (
    MissingData,
    Study,
    figure2,
    figure3,
    figure4,
    figure7,
    figure11,
    figure12,
    figure15,
    figure16,
    save_figure,
    write_figures,
)
from ncrobust.study.drawing import BAND_PREFIX, TWIN_LABEL
from ncrobust.study.plots import FIGURES

# -- reading the data behind the axes ----------------------------------------------------------


def grid(fig: Figure, cols: int) -> np.ndarray:
    """The figure's panels as rows × cols (a panel's second y axis left out)."""
    panels = [ax for ax in fig.axes if ax.get_label() != TWIN_LABEL]
    return np.array(panels, dtype=object).reshape(-1, cols)


def column(axes: np.ndarray, title_start: str) -> int:
    """The column whose key (legend above the first row) is titled ``title_start...``."""
    for c, ax in enumerate(axes[0]):
        if ax.get_legend().get_title().get_text().startswith(title_start):
            return c
    raise AssertionError(f"no column titled {title_start!r}")


def line(ax: Axes, label: str) -> Line2D:
    found = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(found) == 1, [ln.get_label() for ln in ax.get_lines()]
    return found[0]


def xy(ax: Axes, label: str) -> tuple[list[float], list[float]]:
    ln = line(ax, label)
    return list(np.asarray(ln.get_xdata(), float)), list(np.asarray(ln.get_ydata(), float))


def band(ax: Axes, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) limits of a curve's band at each x of the curve."""
    (coll,) = [c for c in ax.collections if c.get_label() == BAND_PREFIX + label]
    vertices = np.concatenate([p.vertices for p in coll.get_paths()])
    xs = np.asarray(line(ax, label).get_xdata(), float)
    lower = np.array([vertices[np.isclose(vertices[:, 0], x), 1].min() for x in xs])
    upper = np.array([vertices[np.isclose(vertices[:, 0], x), 1].max() for x in xs])
    return lower, upper


def legend_labels(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


# -- Figures 2 and 4 ----------------------------------------------------------------------------


def test_figure2_draws_seed_means_with_std_bands(paper_study: Study, fake: ModuleType) -> None:
    fig = figure2(paper_study)
    axes = grid(fig, 2)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == [
        "accuracy",
        "loss (CE)",
        "NC1",
        "NC2 equinorm (std/mean)",
        "NC2 equiangular",
        "NC3 (Frobenius)",
        "NC4",
    ]
    st = column(axes, "ST (3 seeds)")
    nc1 = axes[2, st]
    assert nc1.get_yscale() == "log" and axes[0, st].get_yscale() == "linear"
    expected = [0.05 * fake.profile(e, False) for e in fake.EPOCHS]
    x, y = xy(nc1, "clean · train")
    assert x == list(fake.EPOCHS) and y == pytest.approx(expected)
    lower, upper = band(nc1, "clean · train")
    assert lower == pytest.approx([0.9 * v for v in expected])
    assert upper == pytest.approx([1.1 * v for v in expected])
    assert xy(nc1, "perturbed (pgd) · train")[1][-1] == pytest.approx(5.0)
    assert line(nc1, "perturbed (pgd) · test").get_linestyle() == "--"
    assert xy(axes[0, st], "perturbed (pgd) · train")[1] == pytest.approx([0.0] * 3)
    assert legend_labels(axes[0, st]) == [
        "clean · train",
        "perturbed (pgd) · train",
        "gaussian · train",
        "clean · test",
        "perturbed (pgd) · test",
        "gaussian · test",
    ]
    # AT: the perturbed curve is the epoch's own training perturbations, fresh PGD on test
    at_labels = legend_labels(axes[0, column(axes, "AT")])
    assert "perturbed (train_adv) · train" in at_labels
    assert "perturbed (pgd) · test" in at_labels
    assert "TRADES" not in [ax.get_legend().get_title().get_text()[:6] for ax in axes[0]]


def test_figure4_plots_the_trades_kl_loss(paper_study: Study, fake: ModuleType) -> None:
    axes = grid(figure4(paper_study), 1)
    assert axes[0, 0].get_legend().get_title().get_text().startswith("TRADES")
    loss = axes[1, 0]
    assert loss.get_ylabel() == "KL(clean ‖ perturbed)"
    x, y = xy(loss, "training KL (train_adv, every epoch)")
    assert x == list(range(1, fake.LAST + 1))
    assert y == pytest.approx([0.2 / e for e in x])
    assert xy(axes[2, 0], "clean · train")[1][-1] == pytest.approx(2.0)  # TRADES clean NC1


# -- Figure 3 -------------------------------------------------------------------------------------


def test_figure3_compares_targeted_st_and_perturbed_at(paper_study: Study) -> None:
    # the paper's column order: ST simplex similarity, ST angular distance, then AT's two
    (st_sim, st_ang, at_sim, at_ang) = grid(figure3(paper_study), 4)[0]
    assert [ax.get_legend().get_title().get_text()[:2] for ax in (st_sim, st_ang)] == ["ST"] * 2
    assert [ax.get_legend().get_title().get_text()[:2] for ax in (at_sim, at_ang)] == ["AT"] * 2
    assert [ax.get_ylabel() for ax in (st_sim, st_ang)] == [
        "simplex similarity (rad)",
        "angular distance (rad)",
    ]
    assert xy(st_sim, "targeted vs clean · train")[1] == pytest.approx([0.35] * 3)
    assert xy(st_ang, "targeted vs clean · train")[1] == pytest.approx([0.2] * 3)
    assert xy(at_sim, "train_adv vs clean · train")[1] == pytest.approx([0.1] * 3)
    assert xy(at_sim, "pgd vs clean · test")[1] == pytest.approx([0.3] * 3)
    simplex = line(st_sim, "arccos(−1/(C−1)), C=4")
    assert simplex.get_ydata()[0] == pytest.approx(math.acos(-1 / 3))
    # the centred simplex angle is no baseline for the non-centred panel
    assert "arccos(−1/(C−1)), C=4" not in [ln.get_label() for ln in st_ang.get_lines()]
    assert "between-class baseline not recorded" in [t.get_text() for t in st_ang.texts]


# -- Figure 7 -------------------------------------------------------------------------------------


def test_figure7_bars_are_per_class_means(paper_study: Study) -> None:
    axes = grid(figure7(paper_study), 4)
    assert axes.shape == (1, 4)  # ST only, as the paper
    heights = [[p.get_height() for p in ax.patches] for ax in axes[0]]
    assert heights[0] == pytest.approx([10, 11, 12, 13])
    assert heights[1] == pytest.approx([5, 6, 7, 8])
    assert heights[2] == pytest.approx([4, 5, 6, 7])
    assert heights[3] == pytest.approx([0.1, 0.11, 0.12, 0.13])
    assert "epoch 10" in axes[0, 0].get_title(loc="left")


def test_figure7_reads_the_counts_statistic_name(fake: ModuleType, tmp_path: Path) -> None:
    metrics, stats = fake.paper_rows("st", 2)  # seed 2: factor 1
    for row in stats:
        if row["statistic"] == "predicted_count":
            row["statistic"] = "counts"
    fake.write_run(tmp_path / "st", "st", 2, metrics=metrics, stats=stats)
    axes = grid(figure7(Study.from_paths([tmp_path])), 4)
    assert [p.get_height() for p in axes[0, 0].patches] == pytest.approx([10, 11, 12, 13])


# -- Figures 11 and 12 ----------------------------------------------------------------------------


def test_figure11_layerwise_nc_against_depth(paper_study: Study, fake: ModuleType) -> None:
    axes = grid(figure11(paper_study), 4)
    st = column(axes, "ST (3 seeds) · train")
    x, y = xy(axes[0, st], "clean")
    assert x == [1, 2, 3, 4]
    assert y == pytest.approx([8.0, 2.0, 0.5, 0.05])
    assert axes[0, st].get_yscale() == "log"
    ticks = [t.get_text() for t in axes[-1, st].get_xticklabels()]
    assert ticks == list(fake.LAYERS)
    at_test = column(axes, "AT (3 seeds) · test")
    assert "perturbed (pgd)" in legend_labels(axes[0, at_test])


def test_figure12_ncc_robustness_and_network_accuracy(paper_study: Study) -> None:
    axes = grid(figure12(paper_study), 4)
    st = column(axes, "ST (3 seeds) · train")
    assert xy(axes[0, st], "NCC robustness (pgd)")[1] == pytest.approx([0.6, 0.3, 0.05, 0.0])
    assert line(axes[0, st], "network accuracy (pgd)").get_ydata()[0] == pytest.approx(0.0)
    # the clean train view is its own reference: its NCC match is 1 - NC4
    assert xy(axes[1, st], "NCC–net match (clean)")[1] == pytest.approx([0.99] * 4)
    assert xy(axes[1, st], "NCC–net match (pgd)")[1] == pytest.approx([0.95] * 4)


# -- Figures 15 and 16 ----------------------------------------------------------------------------


def _eps_table(fake: ModuleType, eps_values: list[float], seed: int) -> pd.DataFrame:
    rows = []
    for eps in eps_values:
        for epoch in (0, fake.LAST):
            for metric, value in (("nc1", 100 * eps), ("loss", 10 * eps)):
                layer = "penultimate" if metric == "nc1" else "output"
                rows.append(
                    {
                        "epoch": epoch,
                        "eps": eps,
                        "split": "train",
                        "view": "pgd",
                        "layer": layer,
                        "metric": metric,
                        "value": value * fake.seed_factor(seed),
                    }
                )
    return pd.DataFrame(rows)


def test_figure15_one_colour_per_training_eps(fake: ModuleType, tmp_path: Path) -> None:
    for k in (2, 4, 8):
        eps_study = _eps_table(fake, [8 / 255], 2) if k != 8 else None  # seed 2: factor 1
        fake.write_run(
            tmp_path / f"at{k}", "at", 2, eps=k / 255, alpha=k / 1020, eps_study=eps_study
        )
    axes = grid(figure15(Study.from_paths([tmp_path])), 2)
    nc1 = axes[1]
    assert nc1[0].get_ylabel() == "NC1"
    assert legend_labels(axes[0, 0]) == ["train eps=2/255", "train eps=4/255", "train eps=8/255"]
    assert legend_labels(axes[0, 1]) == [
        "train eps=2/255",
        "train eps=4/255",
        "train eps=8/255 (train_adv at training eps)",
    ]
    assert xy(nc1[0], "train eps=4/255")[1][-1] == pytest.approx(0.3)
    assert xy(nc1[1], "train eps=2/255")[1] == pytest.approx([800 / 255] * 2)
    colours = {line(nc1[0], f"train eps={k}/255").get_color() for k in (2, 4, 8)}
    assert len(colours) == 3


def test_figure16_one_colour_per_evaluation_eps(fake: ModuleType, tmp_path: Path) -> None:
    eps_values = [2 / 255, 4 / 255, 8 / 255]
    for seed in (1, 2):
        fake.write_run(
            tmp_path / f"st{seed}", "st", seed, eps_study=_eps_table(fake, eps_values, seed)
        )
    axes = grid(figure16(Study.from_paths([tmp_path])), 2)
    assert legend_labels(axes[0, 0]) == [
        "clean",
        "pgd eps=2/255",
        "pgd eps=4/255",
        "pgd eps=8/255",
    ]
    x, y = xy(axes[1, 0], "pgd eps=4/255")  # NC1 row; seed factors 0.9 and 1.0
    assert x == [0, fake.LAST] and y == pytest.approx([0.95 * 400 / 255] * 2)
    # beside it, an eps axis: each metric at the last shared epoch against eps (clean at 0)
    by_eps = axes[1, 1]
    x, y = xy(by_eps, f"epoch {fake.LAST}")
    assert x == pytest.approx([0, 2 / 255, 4 / 255, 8 / 255], rel=1e-5)  # 6 digits of eps
    assert y == pytest.approx([0.95 * 0.05] + [0.95 * 100 * e for e in eps_values], rel=1e-5)
    assert list(by_eps.get_xticks()) == pytest.approx([0, 2 / 255, 4 / 255, 8 / 255], rel=1e-5)
    # the bottom row (NC4) has pgd at the run's own eps only: ticks where it was measured
    assert [t.get_text() for t in axes[-1, 1].get_xticklabels()] == ["0", "8/255"]
    assert axes[-1, 1].get_xlabel() == "attack eps (0: clean)"


# -- missing data, saving -------------------------------------------------------------------------


@pytest.fixture
def clean_only(fake: ModuleType, tmp_path: Path) -> Path:
    """An ST run that measured only clean data at the penultimate layer."""
    metrics, _ = fake.paper_rows("st", 1, layerwise=False, views={"train": ("clean",)})
    return fake.write_run(tmp_path / "runs" / "st", "st", 1, metrics=metrics, stats=[])


@pytest.mark.parametrize(
    ("draw", "reason"),
    [
        (figure3, "no targeted view"),
        (figure4, "no TRADES run"),
        (figure7, "no attack statistics"),
        (figure11, "no layerwise measurement"),
        (figure12, "no layerwise measurement"),
        (figure15, "no AT runs that differ only in their training eps"),
        (figure16, "no small-eps study"),
    ],
)
def test_a_figure_without_its_data_is_skipped_with_the_reason(
    clean_only: Path, draw, reason: str
) -> None:
    with pytest.raises(MissingData, match=reason):
        draw(Study.from_paths([clean_only]))


def test_unmeasured_panels_say_so_instead_of_staying_blank(
    fake: ModuleType, tmp_path: Path
) -> None:
    metrics, _ = fake.paper_rows("st", 1, layerwise=False, views={"train": ("clean",)})
    metrics = [row for row in metrics if row["metric"] != "nc3_frobenius"]
    run = fake.write_run(tmp_path / "st", "st", 1, metrics=metrics, stats=[])
    axes = grid(figure2(Study.from_paths([run])), 1)
    assert legend_labels(axes[0, 0]) == ["clean · train"]
    assert axes[5, 0].get_ylabel() == "NC3 (Frobenius)"
    assert not axes[5, 0].get_lines()
    assert [t.get_text() for t in axes[5, 0].texts] == ["not measured"]
    assert not axes[2, 0].texts  # NC1 was measured


def test_write_figures_skips_what_was_not_measured(
    clean_only: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ncrobust.analysis"):
        written = write_figures([clean_only], tmp_path / "figs", names=("fig2", "fig7"))
    assert written == [tmp_path / "figs" / "fig2.png"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "skipped fig7: no attack statistics" in caplog.text


def test_save_figure_formats_and_bad_input(paper_study: Study, tmp_path: Path) -> None:
    fig = figure7(paper_study)
    paths = save_figure(fig, tmp_path, "fig7", ("png", "pdf"))
    assert [p.name for p in paths] == ["fig7.png", "fig7.pdf"]
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    with pytest.raises(ValueError, match="unknown figure format"):
        save_figure(fig, tmp_path, "fig7", ("jpeg",))
    with pytest.raises(ValueError, match="plain file name"):
        save_figure(fig, tmp_path, "../fig7")


def test_nc3_and_equinorm_forms_draw_their_own_metric(fake: ModuleType) -> None:
    frob = ("train", "clean", "penultimate", "nc3_frobenius")
    metrics, stats = fake.paper_rows("st", 2, overrides={frob: 0.02}, layerwise=False)
    metrics += [
        r | {"metric": "nc2_equinorm_std", "value": 3 * r["value"]}
        for r in metrics
        if r["metric"] == "nc2_equinorm"
    ]
    study = Study.from_runs([fake.memory_run("st", 2, metrics, stats)])
    paper_curves = grid(figure2(study, splits=("train",)), 1)
    assert paper_curves[5, 0].get_ylabel() == "NC3 (Frobenius)"
    assert xy(paper_curves[5, 0], "clean · train")[1][-1] == pytest.approx(0.02)
    text = grid(figure2(study, splits=("train",), nc3="text", equinorm="std"), 1)
    assert text[5, 0].get_ylabel() == "NC3 (paper text)"
    assert xy(text[5, 0], "clean · train")[1][-1] == pytest.approx(0.1)
    assert text[3, 0].get_ylabel() == "NC2 equinorm (std)"
    assert xy(text[3, 0], "clean · train")[1][-1] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="unknown NC3 form 'paper'"):
        figure2(study, nc3="paper")


# -- every figure as a picture: legibility facts read from the drawn matplotlib objects -----------


@pytest.fixture(scope="module")
def every_figure_study(fake: ModuleType) -> Study:
    """Runs from which every figure draws: ST and AT with two seeds, ST attacked at a smaller
    radius, AT trained at two radii and attacked at the common one, TRADES with a targeted KL."""
    small, common = "pgd@eps=0.0156863", "pgd@eps=0.0313725"
    st_views = {
        "train": ("clean", "pgd", "gaussian", "targeted", small),
        "test": ("clean", "pgd", "gaussian", "targeted"),
    }
    at_views = {"train": ("clean", "train_adv", "gaussian", common), "test": ("clean", "pgd")}
    runs = []
    for seed in (1, 2):
        runs.append(fake.memory_run("st", seed, *fake.paper_rows("st", seed, views=st_views)))
        for k in (4, 8):
            rows = fake.paper_rows("at", seed, views=at_views)
            runs.append(fake.memory_run("at", seed, *rows, eps=k / 255, alpha=k / 1020))
    metrics, stats = fake.paper_rows("trades", 1)
    targeted, _ = fake.paper_rows("st", 1, layerwise=False, views={"train": ("targeted",)})
    metrics += [r for r in targeted if r["metric"] == "kl"]
    runs.append(fake.memory_run("trades", 1, metrics, stats))
    return Study.from_runs(runs)


def legibility_problems(fig: Figure) -> list[str]:
    """What makes a drawn figure hard to read: two labelled curves of one panel drawn alike, a
    labelled curve missing from every legend, overlapping y tick labels, a title that does not
    name the data, model, norm and eps."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    keyed = {
        text.get_text()
        for ax in fig.axes
        if ax.get_legend() is not None
        for text in ax.get_legend().get_texts()
    }
    problems = []
    title = fig.get_suptitle()
    if not all(word in title for word in ("digits", "small_cnn", "l_inf", "eps=")):
        problems.append(f"title names no setting: {title!r}")
    for ax in fig.axes:
        drawn = [ln for ln in ax.get_lines() if not str(ln.get_label()).startswith("_")]
        styles: dict[tuple[str, str, str], str] = {}
        for ln in drawn:
            style = (to_hex(ln.get_color()), str(ln.get_linestyle()), str(ln.get_marker()))
            if style in styles:
                problems.append(f"{ln.get_label()!r} drawn as {styles[style]!r}: {style}")
            styles[style] = str(ln.get_label())
            if ln.get_label() not in keyed:
                problems.append(f"{ln.get_label()!r} is in no legend")
        low, high = ax.get_window_extent(renderer).y0, ax.get_window_extent(renderer).y1
        boxes = sorted(
            (
                t.get_window_extent(renderer)
                for t in [*ax.get_yticklabels(), *ax.get_yticklabels(minor=True)]
                if t.get_text() and t.get_visible()
            ),
            key=lambda box: box.y0,
        )
        boxes = [b for b in boxes if low - 1 <= (b.y0 + b.y1) / 2 <= high + 1]
        for below, above in itertools.pairwise(boxes):
            if above.y0 < below.y1 - 0.5:
                problems.append(f"y tick labels overlap in panel {ax.get_ylabel()!r}")
                break
    return problems


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_figure_is_legible(every_figure_study: Study, name: str) -> None:
    fig = FIGURES[name](every_figure_study)
    assert legibility_problems(fig) == []


def test_coinciding_clean_and_gaussian_curves_both_show(paper_study: Study) -> None:
    """AT's clean and Gaussian curves coincide (Fig. 2 caption): the clean line is drawn over a
    wider, paler Gaussian one, in another colour and marker."""
    nc1 = grid(figure2(paper_study), 2)[2, column(grid(figure2(paper_study), 2), "AT")]
    clean, noisy = line(nc1, "clean · train"), line(nc1, "gaussian · train")
    assert clean.get_zorder() > noisy.get_zorder()
    assert noisy.get_linewidth() > clean.get_linewidth() and (noisy.get_alpha() or 1) < 1
    assert clean.get_color() != noisy.get_color() and clean.get_marker() != noisy.get_marker()


def test_figure4_kl_panel_has_a_legend_and_a_targeted_axis(every_figure_study: Study) -> None:
    fig = figure4(every_figure_study)
    kl = grid(fig, 1)[1, 0]
    (twin,) = [ax for ax in fig.axes if ax.get_label() == TWIN_LABEL]
    assert [ln.get_label() for ln in twin.get_lines()] == [
        "targeted (targeted) · train, right axis"
    ]
    # the ST table's targeted KL (10) with seed 1's factor 0.9
    assert xy(twin, "targeted (targeted) · train, right axis")[1][-1] == pytest.approx(9.0)
    labels = legend_labels(kl)
    assert labels[0] == "training KL (train_adv, every epoch)"
    assert "perturbed (pgd) · test" in labels and labels[-1].endswith("right axis")
    assert kl.get_yscale() == "log" and twin.get_yscale() == "log"


def test_figure7_baseline_is_the_non_centred_between_class_angle(fake: ModuleType) -> None:
    metrics, stats = fake.paper_rows("st", 2, layerwise=False)
    metrics += [
        r | {"metric": "between_class_angle", "value": 1.3}
        for r in metrics
        if (r["view"], r["split"], r["metric"]) == ("clean", "train", "nc1")
    ]
    axes = grid(figure7(Study.from_runs([fake.memory_run("st", 2, metrics, stats)])), 4)
    baseline = line(axes[0, 3], "between clean class means (non-centred)")
    assert baseline.get_ydata()[0] == pytest.approx(1.3)
