"""Adversarial and random perturbations of pixel batches in [0,1].

PGD in the l_inf and l_2 threat models (untargeted and targeted), the TRADES inner
maximisation and Gaussian noise. Models take pixels in [0,1] and return logits; the
attacks never change the model's train/eval mode and never touch parameter gradients.
"""

from ncrobust.attacks.noise import gaussian
from ncrobust.attacks.pgd import pgd, target_labels
from ncrobust.attacks.trades import TRADES_START_STD, trades_perturb
from ncrobust.attacks.validation import NORMS

__all__ = ["NORMS", "TRADES_START_STD", "gaussian", "pgd", "target_labels", "trades_perturb"]
