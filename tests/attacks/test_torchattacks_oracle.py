"""pgd against torchattacks' PGD / PGDL2 as an independent implementation of the same attack.

Conventions aligned: torchattacks averages the cross-entropy over the batch while pgd sums it;
with a power-of-two batch the two gradients differ by an exact power-of-two factor, so sign
steps are identical and normalised steps agree to rounding. torchattacks switches the model
to eval mode during the attack, so the comparison runs in eval mode (pgd leaves modes alone).
Its l_2 projection (factor min(1, eps/‖delta‖)) is the one pgd uses.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchattacks

from ncrobust.attacks import NORMS, pgd, target_labels

BUDGETS = {"linf": (0.1, 0.02), "l2": (1.0, 0.2)}  # (eps, alpha) on 3x8x8 inputs


def _torchattacks(
    model,
    norm: str,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool,
    targeted: bool,
    num_classes: int,
):
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    attack = cls(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
    if targeted:
        attack.set_mode_targeted_by_function(lambda _x, y: (y + 1) % num_classes, quiet=True)
    return attack


def _distance(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("norm", NORMS)
def test_same_examples_as_torchattacks_without_random_start(
    make_model, make_batch, norm, targeted, dtype
) -> None:
    model = make_model(dtype=dtype)
    x, y = make_batch(32, dtype=dtype)
    eps, alpha = BUDGETS[norm]
    ours = pgd(
        model,
        x,
        y,
        norm=norm,
        eps=eps,
        alpha=alpha,
        steps=10,
        random_start=False,
        targeted=targeted,
    )
    theirs = _torchattacks(model, norm, eps, alpha, 10, False, targeted, 5)(x, y)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # the comparison is not vacuous: the attack moves far and changes the loss it works on
    assert _distance(ours - x, norm).median() > 0.5 * eps
    goal = target_labels(y, 5) if targeted else y
    with torch.no_grad():
        loss_clean = F.cross_entropy(model(x), goal)
        loss_adv = F.cross_entropy(model(ours), goal)
    if targeted:
        assert loss_adv < loss_clean - 0.1
    else:
        assert loss_adv > loss_clean + 0.1


@pytest.mark.parametrize("norm", NORMS)
def test_explicit_target_equals_default_target(make_model, make_batch, norm) -> None:
    model = make_model()
    x, y = make_batch(32)
    eps, alpha = BUDGETS[norm]
    kwargs = dict(norm=norm, eps=eps, alpha=alpha, steps=5, random_start=False, targeted=True)
    implicit = pgd(model, x, y, **kwargs)
    explicit = pgd(model, x, y, target=target_labels(y, 5), **kwargs)
    assert torch.equal(implicit, explicit)


@pytest.mark.parametrize("norm", NORMS)
def test_random_start_draws_match_torchattacks_from_the_same_global_rng(
    make_model, make_batch, norm
) -> None:
    """Without a generator, pgd draws its start exactly as torchattacks does."""
    model = make_model()
    x, y = make_batch(32)
    eps, alpha = BUDGETS[norm]
    torch.manual_seed(123)
    ours = pgd(model, x, y, norm=norm, eps=eps, alpha=alpha, steps=3)
    torch.manual_seed(123)
    theirs = _torchattacks(model, norm, eps, alpha, 3, True, False, 5)(x, y)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    no_start = pgd(model, x, y, norm=norm, eps=eps, alpha=alpha, steps=3, random_start=False)
    assert (ours - no_start).abs().max() > 1e-3  # the start mattered
