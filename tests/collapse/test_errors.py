"""Bad input raises ValueError naming the problem, before the accumulator's state changes."""

from __future__ import annotations

import math

import pytest
import torch

from ncrobust.collapse import AttackStatistics, CollapseAccumulator, class_means, collapse_metrics

H = torch.randn(12, 4)
Y = torch.arange(12) % 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": Y[:11]}, r"different lengths \(12 vs 11\)"),
        ({"labels": torch.where(Y == 2, 3, Y)}, r"must lie in \[0, 3\); found 3"),
        ({"labels": Y - 1}, r"must lie in \[0, 3\); found -1"),
        ({"labels": Y.float()}, "labels must be an integer tensor"),
        ({"num_classes": 1}, "num_classes must be at least 2"),
        ({"num_classes": 3.0}, "num_classes must be an int"),
        ({"features": torch.where(H > 1.5, math.nan, H)}, "features contain NaN or inf"),
        ({"features": torch.where(H > 1.5, math.inf, H)}, "features contain NaN or inf"),
        ({"features": H.long()}, "features must be a floating-point tensor"),
        ({"weight": torch.randn(3, 5)}, "features have 4 values per sample but weight has 5"),
        ({"weight": torch.randn(4, 4)}, r"weight must have shape \(3, p\)"),
        ({"weight": torch.randn(3, 4), "bias": torch.randn(4)}, r"bias must have shape \(3\)"),
        ({"bias": torch.randn(3)}, "bias given without weight"),
        ({"weight": torch.full((3, 4), math.nan)}, "weight contains NaN"),
        ({"reference_means": torch.randn(3, 6)}, "but reference_means has 6"),
        ({"reference_means": torch.randn(2, 4)}, r"reference_means must have shape"),
        ({"reference_means": torch.randn(3, 4), "weight": torch.randn(3, 5)}, r"reference_means"),
        ({"logits": torch.randn(12, 4)}, r"logits must have shape \(12, 3\)"),
        ({"logits": torch.full((12, 3), math.nan)}, "logits contain NaN"),
        ({"labels": Y * 0 + 2}, "only class 2 has samples: .* at least two classes"),
    ],
)
def test_collapse_metrics_rejects(kwargs: dict, message: str) -> None:
    args = {"features": H, "labels": Y, "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        collapse_metrics(**args)


def test_class_means_name_the_classes_without_a_sample() -> None:
    with pytest.raises(ValueError, match=r"class 2 has no sample: means\(\) needs every class"):
        class_means(H, Y % 2, 3)
    with pytest.raises(ValueError, match="classes 3, 4 have no sample"):
        class_means(H, Y, 5)


def test_pass_two_refuses_a_class_pass_one_never_saw() -> None:
    acc = CollapseAccumulator(4)
    acc.update(H, Y)
    acc.next_pass()
    with pytest.raises(ValueError, match=r"class\(es\) \[3\] that pass 1 did not see"):
        acc.update(H, torch.where(Y == 2, 3, Y))
    acc.update(H, Y)  # the refused batch left nothing behind
    assert acc.compute() == pytest.approx(collapse_metrics(H, Y, 4), rel=1e-12)


def test_no_sample_at_all_is_refused() -> None:
    acc = CollapseAccumulator(3)
    acc.update(H[:0], Y[:0])
    with pytest.raises(ValueError, match="no class has samples"):
        acc.next_pass()


def test_pass_order_is_enforced() -> None:
    acc = CollapseAccumulator(3)
    with pytest.raises(ValueError, match="before any update"):
        acc.next_pass()
    acc.update(H, Y)
    with pytest.raises(ValueError, match="compute\\(\\) before next_pass"):
        acc.compute()
    with pytest.raises(ValueError, match="means\\(\\) before next_pass"):
        acc.means()
    acc.next_pass()
    with pytest.raises(ValueError, match="next_pass\\(\\) called twice"):
        acc.next_pass()
    with pytest.raises(ValueError, match="differ from pass 1"):
        acc.compute()  # pass 2 saw nothing yet
    acc.update(H, Y)
    first = acc.compute()
    assert acc.compute() == first  # idempotent, no second reduction
    with pytest.raises(ValueError, match="update\\(\\) after compute"):
        acc.update(H, Y)
    with pytest.raises(ValueError, match="next_pass\\(\\) after compute"):
        acc.next_pass()


def test_failed_update_leaves_state_unchanged() -> None:
    weight = torch.randn(3, 4)
    acc = CollapseAccumulator(3, weight=weight)
    acc.update(H, Y)
    with pytest.raises(ValueError, match="NaN"):
        acc.update(torch.full((2, 4), math.nan), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="5 values per sample but weight has 4"):
        acc.update(torch.randn(2, 5), torch.tensor([0, 1]))
    acc.next_pass()
    with pytest.raises(ValueError, match="NaN"):
        acc.update(torch.where(H > 1.0, math.inf, H), Y)
    acc.update(H, Y)
    want = collapse_metrics(H, Y, 3, weight=weight)
    assert acc.compute() == pytest.approx(want, rel=1e-12)


def test_width_is_fixed_by_the_first_batch() -> None:
    acc = CollapseAccumulator(3)
    acc.update(H, Y)
    with pytest.raises(
        ValueError, match="features have 5 values per sample but earlier batches had 4"
    ):
        acc.update(torch.randn(2, 5), torch.tensor([0, 1]))


def test_pass_two_must_see_the_same_data() -> None:
    acc = CollapseAccumulator(3)
    acc.update(H, Y)
    acc.next_pass()
    acc.update(H[:9], Y[:9])  # a pass 2 that stopped early
    with pytest.raises(ValueError, match="both passes must see the same data"):
        acc.compute()


def test_logits_for_only_some_batches_are_refused() -> None:
    acc = CollapseAccumulator(3)
    acc.update(H, Y)
    acc.next_pass()
    acc.update(H[:6], Y[:6], torch.randn(6, 3))
    acc.update(H[6:], Y[6:])
    with pytest.raises(ValueError, match="logits were given for 6 of 12"):
        acc.compute()


def test_reference_global_mean_needs_reference_means() -> None:
    with pytest.raises(ValueError, match="reference_global_mean given without reference_means"):
        CollapseAccumulator(3, reference_global_mean=torch.zeros(4))
    with pytest.raises(ValueError, match=r"reference_global_mean must have shape \(4\)"):
        CollapseAccumulator(
            3, reference_means=torch.randn(3, 4), reference_global_mean=torch.zeros(5)
        )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: AttackStatistics(3, torch.randn(2, 4)), r"clean_means must have shape \(3, p\)"),
        (lambda: AttackStatistics(1, torch.randn(1, 4)), "at least 2"),
        (
            lambda: AttackStatistics(3, torch.randn(3, 4)).update(H, Y + 1),
            r"predictions must lie in \[0, 3\)",
        ),
        (
            lambda: AttackStatistics(3, torch.randn(3, 4)).update(H[:, :3], Y),
            "3 values per sample but clean_means has 4",
        ),
        (lambda: AttackStatistics(3, torch.randn(3, 4)).update(H, Y[:5]), "different lengths"),
        (lambda: AttackStatistics(3, torch.randn(3, 4)).update(H * math.nan, Y), "NaN or inf"),
    ],
)
def test_attack_statistics_rejects(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
