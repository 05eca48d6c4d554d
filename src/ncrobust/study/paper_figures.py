"""Every numbered figure of the paper as a spec: which runs it draws (dataset, norm, modes) and
which panels (a figure function with its title). ``ncrobust plot RUNS --paper`` draws each
figure from the runs of its dataset as ``figNN.png``, and every figure's layout from the runs of
any other dataset too, as ``figNN-DATASET.png`` titled with the paper's number and the data it
was drawn from; a figure whose runs or measurements are absent is skipped with a note.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from ncrobust.study.drawing import MissingData, save_figure
from ncrobust.study.plots import (
    evolution_figure,
    evolution_rows,
    figure3,
    figure7,
    figure11,
    figure12,
    figure15,
    figure16,
)
from ncrobust.study.study import MissingRuns, Study


@dataclass(frozen=True)
class PaperFigure:
    """One figure of the paper: its runs and the function drawing its panels.

    ``title`` is what it shows (``ST and AT``); figures of the same ``layout`` draw the same
    panels from another dataset's runs (Figures 2 and 6).
    """

    number: int
    title: str
    dataset: str
    norm: str
    modes: tuple[str, ...]
    draw: Callable[[Study, str, Sequence[str], str, str], Figure]
    # draw(study, title, splits, nc3 form, NC2 equinorm form)
    layout: str
    one_seed: bool = False

    @property
    def name(self) -> str:
        return f"fig{self.number:02d}"

    def needs(self, dataset: str | None = None) -> str:
        modes = "/".join(m.upper() for m in self.modes)
        return f"{modes} runs with dataset={dataset or self.dataset}, norm={self.norm}"

    def heading(self, dataset: str | None = None) -> str:
        """``Figure 6 — ST and AT``; drawn from another dataset's runs, the paper's data is
        named (``Figure 2 (the paper's on CIFAR-10) — ST and AT``)."""
        if dataset is None or dataset == self.dataset:
            return f"Figure {self.number} — {self.title}"
        paper = DATASET_NAMES.get(self.dataset, self.dataset)
        return f"Figure {self.number} (the paper's on {paper}) — {self.title}"


DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


Draw = Callable[[Study, str, Sequence[str], str, str], Figure]


def _evolution(modes: tuple[str, ...]) -> Draw:
    def draw(s: Study, title: str, splits: Sequence[str], nc3: str, equinorm: str) -> Figure:
        return evolution_figure(s, modes, title, splits=splits, nc3=nc3, equinorm=equinorm)

    return draw


def _angles(s: Study, title: str, splits: Sequence[str], nc3: str, equinorm: str) -> Figure:
    return figure3(s, splits=splits, title=title)


def _leap(s: Study, title: str, splits: Sequence[str], nc3: str, equinorm: str) -> Figure:
    return figure7(s, title=title)


def _layer_nc(s: Study, title: str, splits: Sequence[str], nc3: str, equinorm: str) -> Figure:
    return figure11(s, splits=splits, title=title)


def _layer_ncc(s: Study, title: str, splits: Sequence[str], nc3: str, equinorm: str) -> Figure:
    return figure12(s, splits=splits, title=title)


def _at_eps(s: Study, title: str, splits: Sequence[str], nc3: str, equinorm: str) -> Figure:
    return figure15(s, nc3=nc3, equinorm=equinorm, title=title)


def _st_eps(s: Study, title: str, splits: Sequence[str], nc3: str, equinorm: str) -> Figure:
    return figure16(s, nc3=nc3, equinorm=equinorm, title=title)


C10, C100, LINF, L2 = "cifar10", "cifar100", "linf", "l2"
PAPER_FIGURES: tuple[PaperFigure, ...] = (
    PaperFigure(2, "ST and AT", C10, LINF, ("st", "at"), _evolution(("st", "at")), "evolution"),
    PaperFigure(3, "angular distance", C10, LINF, ("st", "at"), _angles, "angles"),
    PaperFigure(4, "TRADES", C10, LINF, ("trades",), _evolution(("trades",)), "trades"),
    PaperFigure(5, "AT and TRADES", C10, L2, ("at", "trades"), _evolution(("at", "trades")), "l2"),
    PaperFigure(6, "ST and AT", C100, LINF, ("st", "at"), _evolution(("st", "at")), "evolution"),
    PaperFigure(
        7, "untargeted attack, one seed", C100, LINF, ("st",), _leap, "leap", one_seed=True
    ),
    PaperFigure(8, "TRADES", C100, LINF, ("trades",), _evolution(("trades",)), "trades"),
    PaperFigure(9, "AT and TRADES", C100, L2, ("at", "trades"), _evolution(("at", "trades")), "l2"),
    PaperFigure(10, "angular distance", C100, LINF, ("st", "at"), _angles, "angles"),
    PaperFigure(11, "layerwise NC", C10, LINF, ("st", "at"), _layer_nc, "layer-nc"),
    PaperFigure(12, "layerwise NCC", C10, LINF, ("st", "at"), _layer_ncc, "layer-ncc"),
    PaperFigure(13, "layerwise NC", C100, LINF, ("st", "at"), _layer_nc, "layer-nc"),
    PaperFigure(14, "layerwise NCC", C100, LINF, ("st", "at"), _layer_ncc, "layer-ncc"),
    PaperFigure(15, "AT at several training eps", C10, LINF, ("at",), _at_eps, "at-eps"),
    PaperFigure(16, "ST at several attack eps", C10, LINF, ("st",), _st_eps, "st-eps"),
)


def paper_study(study: Study, spec: PaperFigure, dataset: str | None = None) -> Study:
    """The runs of one figure, from ``dataset`` (default: the paper's); one seed per group when
    the paper shows one."""
    chosen = study.select(
        {"dataset": [dataset or spec.dataset], "norm": [spec.norm], "mode": list(spec.modes)}
    )
    if spec.one_seed:
        chosen = Study.from_runs([g.runs[0] for g in chosen.groups])
    return chosen


def paper_plan(study: Study) -> list[tuple[PaperFigure, str, str]]:
    """(figure, dataset, file name) of every figure the runs' datasets call for, in the paper's
    order: each figure from its own dataset's runs (``figNN``), and each layout once from the
    runs of a dataset the paper does not draw it for (``figNN-DATASET``, the layout's first
    number)."""
    present = {
        (str(run.config.dataset), str(run.config.norm)) for g in study.groups for run in g.runs
    }
    plan = [(spec, spec.dataset, spec.name) for spec in PAPER_FIGURES]
    plan = [item for item in plan if (item[1], item[0].norm) in present]
    drawn = {(spec.layout, spec.dataset) for spec in PAPER_FIGURES}
    for spec in PAPER_FIGURES:
        for dataset in sorted(d for d, norm in present if norm == spec.norm):
            if (spec.layout, dataset) not in drawn:
                drawn.add((spec.layout, dataset))
                plan.append((spec, dataset, f"{spec.name}-{dataset}"))
    return sorted(plan, key=lambda item: (item[0].number, item[2]))


def render_paper_figures(
    study: Study,
    out_dir: str | Path,
    formats: Sequence[str] = ("png",),
    splits: Sequence[str] = ("train",),
    nc3: str = "frobenius",
    equinorm: str = "ratio",
) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Draw every figure of :func:`paper_plan`; returns ({name: files}, {name: why skipped}).

    A layout the runs cannot draw at all (no runs of its norm and modes) is named once, under
    its first figure's name.
    """
    evolution_rows(nc3, equinorm)  # an unknown form is refused before drawing
    written: dict[str, list[Path]] = {}
    skipped: dict[str, str] = {}
    studies: dict[tuple[object, ...], Study] = {}  # figures of the same runs share one study
    for spec, dataset, name in paper_plan(study):
        key = (dataset, spec.norm, spec.modes, spec.one_seed)
        try:
            if key not in studies:
                studies[key] = paper_study(study, spec, dataset)
            fig = spec.draw(studies[key], spec.heading(dataset), splits, nc3, equinorm)
        except MissingRuns:
            skipped[name] = f"needs {spec.needs(dataset)}"
            continue
        except MissingData as exc:
            skipped[name] = f"{exc} (in the {spec.needs(dataset)})"
            continue
        written[name] = save_figure(fig, out_dir, name, formats)
    planned = {spec.layout for spec, _, _ in paper_plan(study)}
    for spec in PAPER_FIGURES:
        if spec.layout not in planned:
            planned.add(spec.layout)
            modes = "/".join(m.upper() for m in spec.modes)
            skipped[spec.name] = f"needs {modes} runs with norm={spec.norm} (any dataset)"
    return written, skipped
