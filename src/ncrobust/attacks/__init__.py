"""Adversarial and random perturbations of input batches (pixels in [0,1] by default).

PGD in the l_inf and l_2 threat models (untargeted and targeted), the TRADES inner
maximisation and Gaussian noise. Models take inputs in a box (``bounds=(lo, hi)``, numbers or
per-channel tensors, [0,1] by default, or ``None`` for no box) and return logits; eps is in the
inputs' own units. The attacks never change the model's train/eval mode and never touch
parameter gradients.
"""

from ncrobust.attacks.noise import gaussian
from ncrobust.attacks.pgd import pgd, target_labels
from ncrobust.attacks.trades import TRADES_START_STD, trades_perturb
from ncrobust.attacks.validation import NORMS, PIXEL_BOUNDS, Bounds

__all__ = [
    "NORMS",
    "PIXEL_BOUNDS",
    "TRADES_START_STD",
    "Bounds",
    "gaussian",
    "pgd",
    "target_labels",
    "trades_perturb",
]
