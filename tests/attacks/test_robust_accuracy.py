"""pgd and torchattacks with random starts reach the same robust accuracy on a trained model.

The model is the registry's ``small_cnn`` trained standardly on ``digits`` for a few epochs
(SGD 0.05, momentum 0.9, weight decay 5e-4, batch 128), evaluated on all 1,797 images so that
the random starts' noise stays well below the 2-point tolerance.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchattacks

from ncrobust.attacks import pgd, target_labels
from ncrobust.data import batches, load_dataset
from ncrobust.models import create_model


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """(ST small_cnn in eval mode, all digits images in [0,1], labels)."""
    torch.manual_seed(0)
    data = load_dataset("digits")
    model = create_model(
        "small_cnn", num_classes=10, in_channels=1, image_size=8, mean=data.mean, std=data.std
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(8):
        for x, y in batches(data.train, 128, shuffle=True, generator=generator):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    images = torch.cat([data.train.images, data.test.images]).float() / 255
    labels = torch.cat([data.train.labels, data.test.labels])
    return model, images, labels


def _accuracy(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == labels).float().mean())


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("linf", 0.2), ("l2", 0.5)])
def test_same_robust_accuracy_as_torchattacks(trained, norm, eps) -> None:
    model, x, y = trained
    assert _accuracy(model, x, y) > 0.97  # a well-trained ST model
    alpha = eps / 4
    ours = pgd(
        model,
        x,
        y,
        norm=norm,
        eps=eps,
        alpha=alpha,
        steps=10,
        generator=torch.Generator().manual_seed(0),
    )
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    theirs = cls(model, eps=eps, alpha=alpha, steps=10, random_start=True)(x, y)
    acc_ours, acc_theirs = _accuracy(model, ours, y), _accuracy(model, theirs, y)
    assert abs(acc_ours - acc_theirs) <= 0.02, (acc_ours, acc_theirs)
    assert acc_ours < 0.8  # the attack bites (clean > 0.97): not a comparison of two no-ops


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.3), ("l2", 1.5)])
def test_targeted_attack_reaches_the_target_for_most_points(trained, norm, eps) -> None:
    model, x, y = trained
    x_adv = pgd(
        model,
        x,
        y,
        norm=norm,
        eps=eps,
        alpha=eps / 4,
        steps=10,
        targeted=True,
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        hit = float((model(x_adv).argmax(1) == target_labels(y, 10)).float().mean())
    assert hit > 0.9, hit
