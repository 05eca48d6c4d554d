"""ncrobust: Neural Collapse of standard, adversarial (PGD-AT) and TRADES training.

Subpackages, each with one job:
``collapse`` (exact streaming NC metrics), ``data`` (datasets as device tensors),
``models`` (registry of tapped classifiers), ``attacks`` (PGD, TRADES, noise),
``training`` (the epoch loop and its probes), ``analysis`` (measure, plots, report).
"""

__version__ = "0.1.0"
