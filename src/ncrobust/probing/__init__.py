"""Measuring Neural Collapse of any model: views × splits × layers → tidy metric rows.

:mod:`~ncrobust.probing.engine` makes the views (clean, PGD, training perturbations,
Gaussian, targeted) and streams their features into the collapse accumulators;
:mod:`~ncrobust.probing.measure` points it at any ``nn.Module`` (:func:`measure`,
:func:`list_layers`). Nothing here imports the run configuration or the trainer: measuring a
model needs neither.
"""

from ncrobust.probing.engine import PerturbedSet, Prober, ProbeResult, ProbeSpec
from ncrobust.probing.measure import AttackSettings, list_layers, measure, measure_tables
from ncrobust.probing.taps import HookedExtractor

__all__ = [
    "AttackSettings",
    "HookedExtractor",
    "PerturbedSet",
    "ProbeResult",
    "ProbeSpec",
    "Prober",
    "list_layers",
    "measure",
    "measure_tables",
]
