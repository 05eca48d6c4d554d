"""Every numbered figure of the paper as a spec: which runs it draws (dataset, norm, modes) and
which panels (a figure function with its title). ``ncrobust plot ROOT --paper`` draws them all
from a complete grid as ``figNN.png``; a figure whose runs are absent is skipped with a note.
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
    """One figure of the paper: its runs and the function drawing its panels."""

    number: int
    title: str
    dataset: str
    norm: str
    modes: tuple[str, ...]
    draw: Callable[[Study, str, Sequence[str], str, str], Figure]
    # draw(study, title, splits, nc3 form, NC2 equinorm form)
    one_seed: bool = False

    @property
    def name(self) -> str:
        return f"fig{self.number:02d}"

    def needs(self) -> str:
        modes = "/".join(m.upper() for m in self.modes)
        return f"{modes} runs with dataset={self.dataset}, norm={self.norm}"


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
    PaperFigure(
        2,
        "Figure 2 — ST and AT (CIFAR-10, l_inf)",
        C10,
        LINF,
        ("st", "at"),
        _evolution(("st", "at")),
    ),
    PaperFigure(
        3, "Figure 3 — angular distance (CIFAR-10, l_inf)", C10, LINF, ("st", "at"), _angles
    ),
    PaperFigure(
        4, "Figure 4 — TRADES (CIFAR-10, l_inf)", C10, LINF, ("trades",), _evolution(("trades",))
    ),
    PaperFigure(
        5,
        "Figure 5 — AT and TRADES (CIFAR-10, l_2)",
        C10,
        L2,
        ("at", "trades"),
        _evolution(("at", "trades")),
    ),
    PaperFigure(
        6,
        "Figure 6 — ST and AT (CIFAR-100, l_inf)",
        C100,
        LINF,
        ("st", "at"),
        _evolution(("st", "at")),
    ),
    PaperFigure(
        7,
        "Figure 7 — untargeted attack, one seed (CIFAR-100, l_inf)",
        C100,
        LINF,
        ("st",),
        _leap,
        one_seed=True,
    ),
    PaperFigure(
        8, "Figure 8 — TRADES (CIFAR-100, l_inf)", C100, LINF, ("trades",), _evolution(("trades",))
    ),
    PaperFigure(
        9,
        "Figure 9 — AT and TRADES (CIFAR-100, l_2)",
        C100,
        L2,
        ("at", "trades"),
        _evolution(("at", "trades")),
    ),
    PaperFigure(
        10, "Figure 10 — angular distance (CIFAR-100, l_inf)", C100, LINF, ("st", "at"), _angles
    ),
    PaperFigure(
        11, "Figure 11 — layerwise NC (CIFAR-10, l_inf)", C10, LINF, ("st", "at"), _layer_nc
    ),
    PaperFigure(
        12, "Figure 12 — layerwise NCC (CIFAR-10, l_inf)", C10, LINF, ("st", "at"), _layer_ncc
    ),
    PaperFigure(
        13, "Figure 13 — layerwise NC (CIFAR-100, l_inf)", C100, LINF, ("st", "at"), _layer_nc
    ),
    PaperFigure(
        14, "Figure 14 — layerwise NCC (CIFAR-100, l_inf)", C100, LINF, ("st", "at"), _layer_ncc
    ),
    PaperFigure(
        15, "Figure 15 — AT at several training eps (CIFAR-10, l_inf)", C10, LINF, ("at",), _at_eps
    ),
    PaperFigure(
        16, "Figure 16 — ST at several attack eps (CIFAR-10, l_inf)", C10, LINF, ("st",), _st_eps
    ),
)


def paper_study(study: Study, spec: PaperFigure) -> Study:
    """The runs of one figure (one seed per group when the paper shows one)."""
    chosen = study.select(
        {"dataset": [spec.dataset], "norm": [spec.norm], "mode": list(spec.modes)}
    )
    if spec.one_seed:
        chosen = Study.from_runs([g.runs[0] for g in chosen.groups])
    return chosen


def render_paper_figures(
    study: Study,
    out_dir: str | Path,
    formats: Sequence[str] = ("png",),
    splits: Sequence[str] = ("train",),
    nc3: str = "frobenius",
    equinorm: str = "ratio",
) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Draw every numbered figure; returns ({figNN: files}, {figNN: why skipped})."""
    evolution_rows(nc3, equinorm)  # an unknown form is refused before drawing
    written: dict[str, list[Path]] = {}
    skipped: dict[str, str] = {}
    studies: dict[tuple[object, ...], Study] = {}  # figures of the same runs share one study
    for spec in PAPER_FIGURES:
        key = (spec.dataset, spec.norm, spec.modes, spec.one_seed)
        try:
            if key not in studies:
                studies[key] = paper_study(study, spec)
            fig = spec.draw(studies[key], spec.title, splits, nc3, equinorm)
        except MissingRuns:
            skipped[spec.name] = f"needs {spec.needs()}"
            continue
        except MissingData as exc:
            skipped[spec.name] = f"{exc} (in the {spec.needs()})"
            continue
        written[spec.name] = save_figure(fig, out_dir, spec.name, formats)
    return written, skipped
