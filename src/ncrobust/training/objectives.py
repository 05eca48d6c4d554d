"""Training objectives: standard (ST), adversarial (PGD-AT) and TRADES, one batch at a time.

Each objective returns the loss to minimise, the logits its accuracy is read from, the
inputs the loss was computed on (the perturbed batch for AT/TRADES, which the ``train_adv``
probe measures) and named parts of the loss for logging.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ncrobust.attacks import TRADES_START_STD, pgd, trades_perturb
from ncrobust.attacks.ball import random_offsets
from ncrobust.config import TrainConfig
from ncrobust.distributed import Rows, draw_rows
from ncrobust.runtime import eval_mode, frozen_parameters


@dataclass
class StepOutput:
    """What one objective evaluation produced (all tensors stay on the device)."""

    loss: torch.Tensor
    logits: torch.Tensor
    inputs: torch.Tensor
    parts: dict[str, torch.Tensor]


def trades_kl(clean_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """Batch mean of KL(softmax(clean) ‖ softmax(adv)), the TRADES regulariser."""
    return F.kl_div(
        F.log_softmax(adv_logits, dim=1),
        F.log_softmax(clean_logits, dim=1),
        reduction="batchmean",
        log_target=True,
    )


def _attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator | None,
    rows: Rows | None = None,
) -> torch.Tensor:
    """PGD with the run's threat model, in the model's current mode; its random start is drawn
    for the whole global batch (``rows``: this process's part of it)."""
    offsets = draw_rows(x, rows, lambda t: random_offsets(t, config.norm, config.eps, generator))
    with frozen_parameters(model):  # the attack needs the input's gradient only
        return pgd(
            model,
            x,
            y,
            norm=config.norm,
            eps=config.eps,
            alpha=config.alpha,
            steps=config.steps,
            start=x + offsets,  # clamped to the pixel box by pgd
        )


def objective_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator | None,
    perturb: bool = True,
    *,
    attack_model: nn.Module | None = None,
    rows: Rows | None = None,
) -> StepOutput:
    """Loss of ``config.mode`` on one batch, in the model's current (training) mode.

    ``perturb=False`` skips the ST-mode attack that only feeds the ``train_adv`` probe.
    AT attacks with BN in train mode (as Rice et al.) and trains on the perturbed batch only.
    TRADES attacks in eval mode, then computes CE(clean) + beta * KL(clean ‖ adv) in train
    mode, as the original TRADES; ``trades_bn_eval`` keeps the model in eval mode throughout
    (the released code's frozen BN), which the trainer arranges.

    Data-parallel training passes the ``DistributedDataParallel`` wrapper as ``model`` (the
    loss's forward passes) and the model itself as ``attack_model`` (the attack's, which need
    no gradient averaging), and ``rows``, this process's part of the global batch: the random
    starts are drawn for the whole global batch, so they do not depend on the process count.
    """
    attacked = model if attack_model is None else attack_model
    if config.mode == "st":
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        inputs = x
        if perturb:  # ST's train_adv view: PGD against the training model, never trained on;
            # eval-mode BN so that the attack leaves ST's running statistics untouched
            with eval_mode(attacked):
                inputs = _attack(attacked, x, y, config, generator, rows)
        return StepOutput(loss, logits, inputs, {})
    if config.mode == "at":
        x_adv = _attack(attacked, x, y, config, generator, rows)
        logits = model(x_adv)
        return StepOutput(F.cross_entropy(logits, y), logits, x_adv, {})
    if config.mode == "trades":
        # the original TRADES attacks in eval mode; with trades_bn_eval the trainer already
        # holds the whole run in eval mode (the released code's frozen BN)
        noise = draw_rows(x, rows, lambda t: t.normal_(generator=generator))
        with eval_mode(attacked), frozen_parameters(attacked):
            x_adv = trades_perturb(
                attacked,
                x,
                eps=config.eps,
                alpha=config.alpha,
                steps=config.steps,
                norm=config.norm,
                start=torch.add(x, noise, alpha=TRADES_START_STD),
            )
        logits = model(x)
        adv_logits = model(x_adv)
        ce = F.cross_entropy(logits, y)
        kl = trades_kl(logits, adv_logits)
        loss = ce + config.trades_beta * kl
        return StepOutput(loss, logits, x_adv, {"ce_loss": ce.detach(), "kl_loss": kl.detach()})
    raise ValueError(f"unknown mode {config.mode!r}")
