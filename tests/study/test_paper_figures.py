"""``ncrobust plot --paper``, ``--where`` and ``--metrics`` on hand-made runs."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from matplotlib.figure import Figure

from ncrobust.analysis import Study
from ncrobust.cli import main
from ncrobust.errors import UsageError
from ncrobust.study import paper_figures
from ncrobust.study.paper_figures import PAPER_FIGURES, render_paper_figures
from ncrobust.study.plots import figure11, figure15, figure16, figure_metrics
from ncrobust.study.study import parse_where


def _lines(ax) -> dict[str, tuple[list[float], list[float]]]:  # type: ignore[no-untyped-def]
    return {
        str(ln.get_label()): (
            list(np.asarray(ln.get_xdata(), float)),
            list(np.asarray(ln.get_ydata(), float)),
        )
        for ln in ax.get_lines()
    }


def test_paper_figures_are_numbered_and_cover_2_to_16() -> None:
    assert [f.number for f in PAPER_FIGURES] == list(range(2, 17))
    assert {f.number for f in PAPER_FIGURES if f.norm == "l2"} == {5, 9}
    assert {f.number for f in PAPER_FIGURES if f.dataset == "cifar100"} == {6, 7, 8, 9, 10, 13, 14}
    assert [f.name for f in PAPER_FIGURES][:2] == ["fig02", "fig03"]


def test_paper_mode_draws_what_the_runs_allow_and_names_the_missing_runs(
    fake: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: dict[str, Figure] = {}

    def keep(fig: Figure, out_dir: Path, name: str, formats: object) -> list[Path]:
        drawn[name] = fig  # rendering to files is tested by the command test below
        return [Path(out_dir) / f"{name}.png"]

    monkeypatch.setattr(paper_figures, "save_figure", keep)
    runs = tmp_path / "runs"
    for mode in ("st", "at"):
        for seed in (1, 2):
            fake.write_run(runs / f"c10_{mode}{seed}", mode, seed, dataset="cifar10")
    fake.write_run(runs / "c100_st1", "st", 1, dataset="cifar100")
    fake.write_run(runs / "c100_st2", "st", 2, dataset="cifar100")
    study = Study.from_paths([runs])
    written, skipped = render_paper_figures(study, tmp_path / "figs")
    assert sorted(written) == [
        "fig02",
        "fig03",
        "fig06",
        "fig07",
        "fig07-cifar10",  # the paper draws Figure 7 on CIFAR-100 only
        "fig10",
        "fig11",
        "fig12",
        "fig13",
        "fig14",
    ]
    assert sorted(drawn) == sorted(written)
    assert (
        drawn["fig06"].get_suptitle()
        == "Figure 6 — ST and AT\ncifar100 · small_cnn · l_inf eps=8/255"
    )
    assert skipped["fig04"] == "needs TRADES runs with dataset=cifar10, norm=linf"
    assert skipped["fig05"] == "needs AT/TRADES runs with norm=l2 (any dataset)"
    assert "no AT runs that differ only in their training eps" in skipped["fig15"]
    assert "no small-eps study" in skipped["fig16"]
    # train data only by default, as the paper
    from ncrobust.study.paper_figures import paper_study

    spec = PAPER_FIGURES[0]
    fig = spec.draw(paper_study(study, spec), spec.heading(), ("train",), "frobenius", "ratio")
    labels = {str(ln.get_label()) for ax in fig.axes for ln in ax.get_lines()}
    assert labels and not any("test" in label for label in labels)
    assert fig.get_suptitle().startswith("Figure 2")
    # Figure 7 shows one seed
    seven = paper_study(study, PAPER_FIGURES[5])
    assert [len(g.runs) for g in seven.groups] == [1]


def test_paper_mode_draws_any_dataset_under_the_paper_numbers(
    fake: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    for mode in ("st", "at", "trades"):
        fake.write_run(runs / mode, mode, 1)  # digits, l_inf
    out = tmp_path / "figs"
    assert main(["plot", str(runs), "--paper", "--formats", "png", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "fig02-digits.png",
        "fig03-digits.png",
        "fig04-digits.png",
        "fig07-digits.png",
        "fig11-digits.png",
        "fig12-digits.png",
    ]
    err = capsys.readouterr().err
    assert "skipped fig05: needs AT/TRADES runs with norm=l2 (any dataset)" in err
    assert "skipped fig15-digits: no AT runs that differ only in their training eps" in err
    study = Study.from_paths([runs])
    spec = PAPER_FIGURES[0]
    fig = spec.draw(
        paper_figures.paper_study(study, spec, "digits"),
        spec.heading("digits"),
        ("train",),
        "frobenius",
        "ratio",
    )
    assert fig.get_suptitle() == (
        "Figure 2 (the paper's on CIFAR-10) — ST and AT\ndigits · small_cnn · l_inf eps=8/255"
    )


def test_plot_command_paper_and_where(
    fake: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    clean_only = {"train": ("clean",)}
    for name, mode, norm in (("st", "st", "linf"), ("at_l2", "at", "l2")):
        metrics, _ = fake.paper_rows(mode, 1, layerwise=False, views=clean_only)
        fake.write_run(runs / name, mode, 1, metrics, [], dataset="cifar10", norm=norm)
    out = tmp_path / "figs"
    assert main(["plot", str(runs), "--paper", "--formats", "png", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["fig02.png", "fig05.png"]  # 5: AT l_2
    err = capsys.readouterr().err
    assert "skipped fig04: needs TRADES runs with dataset=cifar10, norm=linf" in err
    assert "skipped fig11: no layerwise measurement" in err
    out2 = tmp_path / "figs2"
    args = ["plot", str(runs), "--where", "norm=l2", "--figures", "fig2,fig4", "--formats", "png"]
    assert main([*args, "--out", str(out2)]) == 0
    assert sorted(p.name for p in out2.iterdir()) == ["fig2.png"]
    assert parse_where("dataset=cifar100,mode=st,mode=at") == {
        "dataset": ["cifar100"],
        "mode": ["st", "at"],
    }
    with pytest.raises(UsageError, match="unknown key 'seed'"):
        parse_where("seed=1")


def test_where_selects_runs_by_setting(fake: ModuleType, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fake.write_run(runs / "a", "st", 1, dataset="cifar10")
    fake.write_run(runs / "b", "at", 1, dataset="cifar100", norm="l2")
    study = Study.from_paths([runs], {"dataset": ["cifar100"], "norm": ["l2"]})
    assert [g.mode for g in study.groups] == ["at"]
    assert [g.mode for g in Study.from_paths([runs]).select({"mode": ["st"]}).groups] == ["st"]


# -- any recorded metric -----------------------------------------------------------------------


def test_any_recorded_metric_against_epoch_and_depth(fake: ModuleType) -> None:
    metrics, stats = fake.paper_rows("st", 2)
    extra = []
    for row in metrics:
        if row["metric"] == "nc1" and row["view"] in ("clean", "pgd"):
            extra.append(row | {"metric": "cdnv", "value": row["value"] / 10})
    study = Study.from_runs([fake.memory_run("st", 2, metrics + extra, stats)])
    fig = figure_metrics(study, ["cdnv", "nc1"], splits=("train",))
    cdnv, nc1 = fig.axes[0], fig.axes[1]
    assert cdnv.get_ylabel() == "cdnv" and nc1.get_ylabel() == "NC1"  # one name per quantity
    x, y = _lines(cdnv)["clean · train"]
    assert x == list(fake.EPOCHS)
    assert y == pytest.approx([0.005 * fake.profile(e, False) for e in fake.EPOCHS])
    assert _lines(cdnv)["perturbed (pgd) · train"][1][-1] == pytest.approx(0.5)
    depth = figure_metrics(study, ["cdnv"], x="depth", splits=("train",))
    x, y = _lines(depth.axes[0])["clean · train"]
    assert x == [1, 2, 3, 4] and y == pytest.approx([0.8, 0.2, 0.05, 0.005])
    with pytest.raises(UsageError, match="etf_error not recorded"):
        figure_metrics(study, ["etf_error"])


def test_plot_command_metrics(fake: ModuleType, tmp_path: Path) -> None:
    metrics, stats = fake.paper_rows("st", 1)
    metrics += [r | {"metric": "cdnv"} for r in metrics if r["metric"] == "nc1"]
    fake.write_run(tmp_path / "st", "st", 1, metrics=metrics, stats=stats)
    out = tmp_path / "figs"
    args = [
        "plot",
        str(tmp_path / "st"),
        "--metrics",
        "cdnv",
        "--formats",
        "png",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert (out / "metrics-cdnv-epoch.png").is_file()


# -- Figures 11, 15 and 16 from what the runs measured ---------------------------------------------


def test_figure16_over_epochs_from_in_training_eps_views(fake: ModuleType) -> None:
    views = {"train": ("clean", "pgd", "pgd@eps=0.00784314", "pgd@eps=0.0156863")}
    metrics, stats = fake.paper_rows("st", 2, layerwise=False, views=views)
    study = Study.from_runs([fake.memory_run("st", 2, metrics, stats)])
    fig = figure16(study)
    nc1 = _lines(fig.axes[2])  # row NC1, column "against epoch"
    assert list(nc1) == ["clean", "pgd eps=2/255", "pgd eps=4/255", "pgd eps=8/255"]
    x, y = nc1["pgd eps=2/255"]
    assert x == list(fake.EPOCHS)  # a point at every measured epoch
    assert y[-1] == pytest.approx(1.25, rel=1e-5)
    assert nc1["pgd eps=8/255"][1][-1] == pytest.approx(5.0)  # the run's own pgd


def test_figure15_header_states_the_eps_plotted(fake: ModuleType) -> None:
    runs = []
    for k in (2, 4):
        views = {"train": ("clean", "train_adv", "pgd@eps=0.0313725")} if k == 2 else None
        metrics, stats = fake.paper_rows("at", 2, views=views)
        runs.append(fake.memory_run("at", 2, metrics, stats, eps=k / 255, alpha=k / 1020))
    fig = figure15(Study.from_runs(runs), eval_eps=8 / 255)
    title = fig.axes[1].get_legend().get_title().get_text()
    assert "pgd eps=8/255" in title and "train_adv at training eps" in title
    # by default the common radius is the family's largest training eps (the paper's 8/255)
    own = figure15(Study.from_runs(runs)).axes[1].get_legend().get_title().get_text()
    assert "8/255" not in own and "train_adv at training eps" in own  # 4/255 not measured
    only_own = figure15(Study.from_runs(runs), eval_eps=16 / 255)
    title = only_own.axes[1].get_legend().get_title().get_text()
    assert "16/255" not in title and "train_adv at training eps" in title


def test_figure11_uses_layerwise_pgd_when_train_adv_has_one_layer(fake: ModuleType) -> None:
    metrics, stats = fake.paper_rows("at", 2)
    metrics = [
        r
        for r in metrics
        if not (r["view"] == "train_adv" and r["layer"] not in ("penultimate", "output"))
    ]
    metrics += [
        r | {"view": "pgd"}
        for r in fake.paper_rows("at", 2, views={"train": ("pgd",)})[0]
        if r["epoch"] == fake.LAST and r["layer"] != "output"
    ]
    study = Study.from_runs([fake.memory_run("at", 2, metrics, stats)])
    fig = figure11(study, splits=("train",))
    lines = _lines(fig.axes[0])
    assert "perturbed (pgd)" in lines and "perturbed (train_adv)" not in lines
    assert lines["perturbed (pgd)"][0] == [1, 2, 3, 4]
