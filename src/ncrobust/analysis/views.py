"""View labels of the metrics table: plain names (``clean``, ``pgd``) or a view with its own
attack radius, ``"{view}@eps={eps:.6g}"`` with eps in [0, 1] pixel units (``pgd@eps=0.00784314``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    return base if eps is None else f"{base}{EPS_MARK}{eps:.6g}"


def parse_view(label: str) -> ViewLabel:
    """Split ``"pgd@eps=0.0313725"`` into ``ViewLabel("pgd", 0.0313725)``; plain names pass.

    Raises ValueError for a radius that is not a number in [0, 1] or a label with no view name.
    """
    base, mark, rest = str(label).partition(EPS_MARK)
    if not mark:
        return ViewLabel(base)
    try:
        eps = float(rest)
    except ValueError:
        raise ValueError(f"view label {label!r}: radius {rest!r} is not a number") from None
    if not base or not math.isfinite(eps) or not 0.0 <= eps <= 1.0:
        raise ValueError(f"view label {label!r}: needs a view name and an eps in [0, 1]")
    return ViewLabel(base, eps)


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
