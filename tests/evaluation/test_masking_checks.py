"""``ncrobust eval``'s gradient-masking checks: silent on a standard model, and each one fires on
a model built to mask gradients in its way (the checks of the original AutoAttack suite)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncrobust.data import load_dataset
from ncrobust.errors import UsageError
from ncrobust.evaluation.robust_accuracy import evaluate
from ncrobust.runs.tables import CHECKS
from ncrobust.study.robustness import FLAG, RobustnessRow, RobustnessTable, Stat

EPS = 0.15
LIMIT = 100


@pytest.fixture(scope="module")
def standard() -> nn.Module:
    """A standardly trained MLP on digits (clean test accuracy above 0.9)."""
    torch.manual_seed(0)
    train = load_dataset("digits").split("train")
    x, y = train.images.float() / 255, train.labels.long()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(80):
        optimiser.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimiser.step()
    return model.eval()


class Rounded(nn.Module):
    """Quantises its input to 5 levels: the gradient w.r.t. the input is zero everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner((x * 4).round() / 4)


class Probabilities(nn.Module):
    """Returns softmax probabilities instead of logits."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x).softmax(1)


class Noisy(nn.Module):
    """Adds fresh input noise on every forward pass (a randomised defence)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x + 0.05 * torch.randn_like(x))


def checks(
    model: nn.Module, attacks: str = "pgd:steps=10", surrogate: nn.Module | None = None
) -> tuple[pd.DataFrame, RobustnessRow]:
    """The evaluation's rows and the report row built from them (one seed)."""
    data = load_dataset("digits")
    table = evaluate(model, data, attacks=attacks, eps=EPS, limit=LIMIT, surrogate=surrogate)
    found = table[(table.attack == CHECKS) & (table.metric != "points")]
    values = dict(zip(found.metric, found.value, strict=True))
    row = RobustnessRow(
        group="g", epochs=(0,), norm="linf", eps=EPS, seeds=1, points=(LIMIT,), clean=None,
        pgd_trained=None, attacks={},
        checks={m: Stat(v, float("nan"), 1) for m, v in values.items()}, worst=values,
    )  # fmt: skip
    return table, row


def test_a_standard_model_raises_no_flag(standard: nn.Module) -> None:
    table, row = checks(standard)
    found = table[table.attack == CHECKS].set_index("metric").value
    assert found["zero_gradient_fraction"] == 0
    assert found["output_variation"] < 1e-4
    assert found["probability_output"] == 0
    # PGD-10 on the same points as every other attack: the same number as pgd:steps=10
    pgd10 = table[(table.attack == "pgd:steps=10:restarts=1") & (table.metric == "accuracy")]
    assert found["pgd10_accuracy"] == pytest.approx(float(pgd10.value.iloc[0]))
    # accuracy falls as eps grows, to 0 at 4 eps
    assert found["pgd10_accuracy"] >= found["pgd10_accuracy_eps_x2"]
    assert found["pgd10_accuracy_eps_x4"] <= 0.05
    assert found["points"] == LIMIT
    assert row.evidence() == []
    assert not RobustnessTable([row], []).flagged(row)


@pytest.mark.parametrize(
    ("wrapper", "evidence"),
    [
        (Rounded, ["zero input gradient on 100.0% of the points", "at 4× eps (does not fall"]),
        (Probabilities, ["outputs are probabilities"]),
        (Noisy, ["outputs change between forward passes"]),
    ],
)
def test_a_masked_model_raises_the_flag_with_its_evidence(
    standard: nn.Module, wrapper: type[nn.Module], evidence: list[str]
) -> None:
    _, row = checks(wrapper(standard))
    found = row.evidence()
    assert len(found) == len(evidence), found
    assert all(any(text in e for e in found) for text in evidence), found
    table = RobustnessTable([row], [])
    assert table.flagged(row) and table.cells()[0][-1] == FLAG


def test_a_transfer_attack_breaks_what_the_masked_gradient_hides(standard: nn.Module) -> None:
    table, row = checks(Rounded(standard), surrogate=standard)
    found = table[table.attack == CHECKS].set_index("metric").value
    # PGD-10 on the quantised model cannot move; made on the plain one, it transfers
    assert found["pgd10_accuracy"] > 0.5 and found["transfer_gain"] > 0.3
    assert any("transferred from another checkpoint broke" in e for e in row.evidence())
    assert standard.training is False


def test_checks_can_be_skipped(standard: nn.Module) -> None:
    table = evaluate(
        standard, load_dataset("digits"), attacks="pgd:steps=2", eps=EPS, limit=20, checks=False
    )
    assert CHECKS not in set(table.attack)
    with pytest.raises(UsageError, match="masking checks: checks=True"):
        evaluate(standard, load_dataset("digits"), eps=EPS, checks=False, surrogate=standard)
    with pytest.raises(UsageError, match=r"surrogate must be a torch\.nn\.Module"):
        evaluate(standard, load_dataset("digits"), eps=EPS, surrogate="epoch 3")  # type: ignore[arg-type]
