"""The training loop (ST / AT / TRADES), its measurement probes and checkpoints."""

from ncrobust.config import is_measured
from ncrobust.probing.engine import PerturbedSet, Prober, ProbeResult, ProbeSpec
from ncrobust.runs.checkpoint import load_checkpoint, save_checkpoint
from ncrobust.training.schedule import piecewise_lr
from ncrobust.training.trainer import resume_config, train

__all__ = [
    "PerturbedSet",
    "ProbeResult",
    "ProbeSpec",
    "Prober",
    "is_measured",
    "load_checkpoint",
    "piecewise_lr",
    "resume_config",
    "save_checkpoint",
    "train",
]
