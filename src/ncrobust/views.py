"""Views, splits and layer names: what a measurement row is about, written once.

A *view* is the data a measurement sees: ``clean``, ``pgd`` (fresh PGD on the evaluated model),
``train_adv`` (the epoch's own training perturbations), ``gaussian``, ``targeted`` or
``ncc_adaptive`` (PGD on each layer's nearest-class-mean rule, NCC rows only). A view
spec ``VIEW[@SPLIT][@eps=E]`` may limit it to one split and give an attack view its own radius;
its *label* in the tables is the view's name, or ``"{view}@eps={eps:.6g}"`` with eps in pixel
units. Radii are numbers or fractions such as ``8/255`` everywhere (:func:`parse_pixels`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ncrobust.errors import UsageError

# PGD per layer on that layer's nearest-class-mean rule: one attack per measured layer, so
# selected explicitly (``all`` and no mode's defaults include it)
ADAPTIVE_VIEW = "ncc_adaptive"
PERTURBED_VIEWS = ("pgd", "train_adv", "gaussian", "targeted", ADAPTIVE_VIEW)
VIEWS = ("clean", *PERTURBED_VIEWS)
SPLITS = ("train", "test")
PENULTIMATE = "penultimate"  # the tap of the classifier head's input
OUTPUT_LAYER = "output"  # the layer name of accuracy / loss rows
FIT_VIEW = "fit"  # rows about the optimisation itself (training loss, lr, seconds) per epoch

# -- view specs: VIEW, VIEW@split, VIEW@eps=E, VIEW@split@eps=E ----------------------------

# the attack views a spec may give a radius of their own
RADIUS_VIEWS = ("pgd", "targeted", "ncc_adaptive")


@dataclass(frozen=True)
class ViewSpec:
    """One entry of ``views``: a view, optionally limited to one split, optionally with its own
    attack radius ``eps`` (pixel units; the PGD step scales linearly, alpha · eps / config eps)."""

    view: str
    split: str | None = None
    eps: float | None = None

    @property
    def label(self) -> str:
        """The view's name in the metrics table: ``pgd``, or ``pgd@eps=0.00784314``."""
        return self.view if self.eps is None else f"{self.view}@eps={self.eps:.6g}"


def parse_view(spec: str, norm: str | None = None) -> ViewSpec:
    """Parse and check one view spec ``VIEW[@SPLIT][@eps=E]`` (E a number or k/255).

    With ``norm`` the radius is checked against the threat model as the config's eps is
    (l_inf: at most the whole [0,1] pixel range; l_2: any positive radius).
    """
    text = str(spec).strip()
    view, *parts = text.split("@")
    if view not in VIEWS:
        where = f" in {text!r}" if parts else ""
        raise UsageError(f"unknown view {view!r}{where} (known: {', '.join(VIEWS)}, or 'all')")
    split: str | None = None
    eps: float | None = None
    for part in parts:
        key, sep, value = part.partition("=")
        if sep and key.strip() == "eps" and eps is None:
            eps = parse_pixels(value, f"eps of view {text!r}")
        elif not sep and part in SPLITS and split is None:
            split = part
        else:
            raise UsageError(
                f"cannot read {part!r} in view {text!r}: expected VIEW[@SPLIT][@eps=E] "
                f"with SPLIT one of {', '.join(SPLITS)} and E a number or k/255"
            )
    if eps is not None:
        if view not in RADIUS_VIEWS:
            raise UsageError(
                f"view {text!r}: only {', '.join(RADIUS_VIEWS[:-1])} and {RADIUS_VIEWS[-1]} "
                "take a radius of their own"
            )
        if not (math.isfinite(eps) and eps > 0):
            raise UsageError(f"view {text!r}: eps must be a finite number > 0, got {eps:g}")
        if norm == "linf" and eps > 1:
            raise UsageError(
                f"view {text!r}: eps={eps:g} is larger than the whole [0,1] pixel range for "
                f"linf; write it as a fraction, e.g. {view}@eps={eps:g}/255"
            )
    return ViewSpec(view, split, eps)


def view_kind(label: str) -> str:
    """The view of a plan label (``pgd@eps=0.25`` -> ``pgd``)."""
    return label.partition("@")[0]


def view_radii(views: Sequence[str]) -> dict[str, float]:
    """Label -> own radius of the views in ``views`` that carry one."""
    return {v.label: v.eps for v in map(parse_view, views) if v.eps is not None}


def scaled_step(alpha: float, eps: float, view_eps: float) -> float:
    """The PGD step at radius ``view_eps`` of a threat model (``eps``, ``alpha``): linear in eps,
    as the paper's small-eps study (Appendix H) scales it."""
    if eps <= 0:
        raise UsageError("a view with its own eps needs the run's eps > 0 to scale the step")
    return alpha * (view_eps / eps)  # exactly alpha at the run's own eps


def probe_plan(views: Sequence[str], splits: Sequence[str]) -> list[tuple[str, str]]:
    """(split, view label) pairs of ``views`` (``VIEW@split`` limits one) on ``splits``.

    ``train_adv`` exists on the train split only, and the clean train view comes first: its
    class means are every other view's reference. A view with its own radius appears under
    its label (:attr:`ViewSpec.label`).
    """
    parsed = [parse_view(spec) for spec in views]
    plan: list[tuple[str, str]] = []
    for split in SPLITS:
        if split not in splits:
            continue
        for view in parsed:
            if (view.split and view.split != split) or (
                view.view == "train_adv" and split != "train"
            ):
                continue
            plan.append((split, view.label))
    if ("train", "clean") in plan:
        plan.remove(("train", "clean"))
        plan.insert(0, ("train", "clean"))
    return plan


def parse_pixels(value: object, name: str = "value") -> float:
    """A pixel-unit amount given as a number or a fraction such as ``8/255``."""
    if isinstance(value, bool):
        raise UsageError(f"{name}: expected a number or k/255, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    match = re.fullmatch(r"([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)", text)
    parts = match.groups() if match else (text, "1")
    try:
        numerator, denominator = (float(part) for part in parts)
    except ValueError as exc:
        raise UsageError(f"{name}: expected a number or k/255, got {text!r}") from exc
    if denominator == 0:
        raise UsageError(f"{name}: division by zero in {text!r}")
    return numerator / denominator


def format_pixels(value: float) -> str:
    """A pixel-unit amount as a user writes it: a short decimal (``0.15``), else ``8/255`` when
    it is a whole number of 255ths; :func:`parse_pixels` reads both back."""
    short = f"{value:.4g}"
    steps = value * 255
    if float(short) != value and abs(steps - round(steps)) < 1e-6 * max(1.0, steps):
        return f"{round(steps)}/255"
    return f"{value:g}"


# -- labels read back from tables (other rows, e.g. ``fit``, are plain names too) ---------

EPS_MARK = "@eps="


@dataclass(frozen=True)
class ViewLabel:
    """A parsed view label: the view's kind and its own radius (None: the run's radius)."""

    base: str
    eps: float | None = None

    def __str__(self) -> str:
        return view_label(self.base, self.eps)


def view_label(base: str, eps: float | None = None) -> str:
    """The metrics table's label of ``base`` attacked at ``eps`` (plain ``base`` when None)."""
    return ViewSpec(base, None, eps).label


def parse_label(label: str) -> ViewLabel:
    """Split ``"pgd@eps=0.0313725"`` into ``ViewLabel("pgd", 0.0313725)``; plain names pass.

    Raises ValueError (a UsageError) for a label whose radius part is not a valid view spec.
    """
    text = str(label)
    if EPS_MARK not in text:
        return ViewLabel(text)
    spec = parse_view(text)
    return ViewLabel(spec.view, spec.eps)


def views_of(labels: list[str], base: str) -> dict[float, str]:
    """The labels of ``base`` with their own radius, by radius (plain ``base`` not included)."""
    out: dict[float, str] = {}
    for label in labels:
        try:
            parsed = parse_label(label)
        except ValueError:
            continue  # a foreign label is not a view with a radius
        if parsed.base == base and parsed.eps is not None:
            out[parsed.eps] = label
    return dict(sorted(out.items()))
