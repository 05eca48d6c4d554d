"""View labels of the metrics table: plain names (``clean``, ``pgd``) or a view with its own
attack radius, ``"{view}@eps={eps:.6g}"`` with eps in pixel units (``pgd@eps=0.00784314``).

The grammar is :func:`ncrobust.config.parse_view`'s (a label is a valid view spec); this module
reads labels back from tables, where other rows (``fit``) are plain names too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ncrobust.config import ViewSpec
from ncrobust.config import parse_view as parse_spec

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


def parse_view(label: str) -> ViewLabel:
    """Split ``"pgd@eps=0.0313725"`` into ``ViewLabel("pgd", 0.0313725)``; plain names pass.

    Raises ValueError (a UsageError) for a label whose radius part is not a valid view spec.
    """
    text = str(label)
    if EPS_MARK not in text:
        return ViewLabel(text)
    spec = parse_spec(text)
    return ViewLabel(spec.view, spec.eps)


def views_of(labels: list[str], base: str) -> dict[float, str]:
    """The labels of ``base`` with their own radius, by radius (plain ``base`` not included)."""
    out: dict[float, str] = {}
    for label in labels:
        try:
            parsed = parse_view(label)
        except ValueError:
            continue  # a foreign label is not a view with a radius
        if parsed.base == base and parsed.eps is not None:
            out[parsed.eps] = label
    return dict(sorted(out.items()))
