"""Robust accuracy under strong attacks (AutoAttack, PGD with restarts), of any model or of a
run's kept checkpoints."""

from ncrobust.evaluation.robust_accuracy import evaluate

__all__ = ["evaluate"]
