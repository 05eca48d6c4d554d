"""Per-class detail and classes without a sample, against direct float64 computations."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from ncrobust.collapse import CollapseAccumulator, collapse_metrics


def clustered(
    n: int, p: int, classes: list[int], num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features of the given classes only (every one of them at least once), a weight, logits
    and reference means for ``num_classes`` classes."""
    g = torch.Generator().manual_seed(seed)
    chosen = torch.tensor(classes)
    labels = torch.cat(
        [chosen, chosen[torch.randint(0, len(classes), (n - len(classes),), generator=g)]]
    )
    centres = 2.0 * torch.randn(num_classes, p, generator=g) + 3.0
    features = centres[labels] + 1.5 * torch.randn(n, p, generator=g)
    weight = centres - centres.mean(0) + torch.randn(num_classes, p, generator=g)
    logits = features @ weight.T + torch.randn(n, num_classes, generator=g)
    reference = centres + 0.5 * torch.randn(num_classes, p, generator=g)
    return features.double(), labels, weight.double(), logits, reference.double()


def wide(table: pd.DataFrame) -> pd.DataFrame:
    return table.pivot(index="class", columns="metric", values="value")


def test_per_class_table_matches_direct_computation() -> None:
    features, labels, weight, logits, reference = clustered(300, 10, [0, 1, 2, 3, 4], 5, seed=0)
    values, table = collapse_metrics(
        features, labels, 5, weight, logits=logits, reference_means=reference, per_class=True
    )
    assert list(table.columns) == ["class", "metric", "value"]
    got = wide(table)
    assert set(got.columns) == {
        "count", "sigma2", "centred_mean_norm", "cdnv", "cos_weight_mean", "nc4",
        "ncc_accuracy", "ncc_match",
    }  # fmt: skip
    means = torch.stack([features[labels == c].mean(0) for c in range(5)])
    centred = means - features.mean(0)
    own_nearest = torch.cdist(features, means).argmin(1)
    ref_nearest = torch.cdist(features, reference).argmin(1)
    prediction = logits.argmax(1)
    for c in range(5):
        rows = labels == c
        sigma2 = (features[rows] - means[c]).square().sum(1).mean().item()
        others = [d for d in range(5) if d != c]
        sigma2_all = [(features[labels == d] - means[d]).square().sum(1).mean() for d in range(5)]
        cdnv = sum(
            (sigma2_all[c] + sigma2_all[d]) / (2 * (means[c] - means[d]).square().sum())
            for d in others
        ) / len(others)
        cos = weight[c] @ centred[c] / (weight[c].norm() * centred[c].norm())
        want = {
            "count": float(rows.sum()),
            "sigma2": sigma2,
            "centred_mean_norm": centred[c].norm().item(),
            "cdnv": float(cdnv),
            "cos_weight_mean": float(cos),
            "nc4": (prediction[rows] != own_nearest[rows]).double().mean().item(),
            "ncc_accuracy": (ref_nearest[rows] == c).double().mean().item(),
            "ncc_match": (prediction[rows] == ref_nearest[rows]).double().mean().item(),
        }
        for key, value in want.items():
            assert got.loc[c, key] == pytest.approx(value, rel=1e-10, abs=1e-14), (c, key)
    # the per-class terms average to the scalar metrics
    counts = got["count"]
    assert got["cdnv"].mean() == pytest.approx(values["cdnv"], rel=1e-12)
    assert (got["nc4"] * counts).sum() / counts.sum() == pytest.approx(values["nc4"], rel=1e-12)
    assert got["cos_weight_mean"].var() == pytest.approx(values["unc3"], rel=1e-10)


def test_per_class_without_weight_uses_the_own_means_ncc() -> None:
    features, labels, _, _, _ = clustered(120, 6, [0, 1, 2], 3, seed=1)
    _, table = collapse_metrics(features, labels, 3, per_class=True)
    got = wide(table)
    assert set(got.columns) == {"count", "sigma2", "centred_mean_norm", "cdnv", "ncc_accuracy"}
    means = torch.stack([features[labels == c].mean(0) for c in range(3)])
    nearest = torch.cdist(features, means).argmin(1)
    for c in range(3):
        want = (nearest[labels == c] == c).double().mean().item()
        assert got.loc[c, "ncc_accuracy"] == pytest.approx(want, rel=1e-12)


def test_classes_without_a_sample_are_named_and_left_out() -> None:
    present = [0, 1, 3, 4]
    features, labels, weight, logits, reference = clustered(200, 9, present, 6, seed=2)
    acc = CollapseAccumulator(6, weight=weight, reference_means=reference)
    for _ in range(2):
        for chunk in torch.arange(200).split(70):
            acc.update(features[chunk], labels[chunk], logits[chunk])
        if acc.current_pass == 1:
            acc.next_pass()
    values = acc.compute()
    assert acc.missing_classes == (2, 5)
    assert values["missing_classes"] == 2.0
    with pytest.raises(ValueError, match="classes 2, 5 have no sample"):
        acc.means()
    # the geometry over the classes present equals the same data relabelled 0..3
    relabel = torch.full((6,), -1, dtype=torch.long)
    relabel[present] = torch.arange(4)
    compact = collapse_metrics(features, relabel[labels], 4, weight[present])
    for key in (
        "nc1", "nc1_trace_ratio", "cdnv", "nc2_equinorm", "nc2_equinorm_std", "nc2_equiangular",
        "etf_error", "gnc2", "between_class_angle", "nc3", "nc3_frobenius", "unc3",
    ):  # fmt: skip
        assert values[key] == pytest.approx(compact[key], rel=1e-10), key
    # W's own geometry is about every class; NCC picks among the present means only
    norms = weight.norm(dim=1)
    assert values["nc2_equinorm_w"] == pytest.approx((norms.std() / norms.mean()).item(), rel=1e-12)
    means = torch.stack([features[labels == c].mean(0) for c in present])
    own = torch.tensor(present)[torch.cdist(features, means).argmin(1)]
    prediction = logits.argmax(1)
    assert values["nc4"] == pytest.approx((prediction != own).double().mean().item(), rel=1e-12)
    ref_nearest = torch.cdist(features, reference).argmin(1)  # the reference has all 6 classes
    assert values["ncc_accuracy"] == pytest.approx(
        (ref_nearest == labels).double().mean().item(), rel=1e-12
    )
    table = acc.per_class()
    for c in (2, 5):
        rows = table[table["class"] == c]
        assert rows["metric"].tolist() == ["count"] and rows["value"].tolist() == [0.0]
    assert not table[table["class"].isin(present)]["value"].isna().any()
    assert sorted(table["class"].unique()) == list(range(6))


def test_all_classes_present_adds_no_missing_count() -> None:
    features, labels, *_ = clustered(60, 4, [0, 1, 2], 3, seed=3)
    acc = CollapseAccumulator(3)
    acc.update(features, labels)
    acc.next_pass()
    acc.update(features, labels)
    assert "missing_classes" not in acc.compute() and acc.missing_classes == ()


def test_per_class_is_idempotent_and_runs_compute() -> None:
    features, labels, *_ = clustered(60, 4, [0, 1, 2], 3, seed=4)
    acc = CollapseAccumulator(3)
    acc.update(features, labels)
    acc.next_pass()
    acc.update(features, labels)
    first = acc.per_class()
    assert acc.current_pass == 3
    first.loc[0, "value"] = -1.0  # a copy: the accumulator's table is unchanged
    pd.testing.assert_frame_equal(acc.per_class(), acc.per_class())
    assert acc.per_class().loc[0, "value"] != -1.0


def test_merged_halves_with_a_missing_class_equal_the_whole() -> None:
    features, labels, weight, logits, _ = clustered(150, 5, [0, 2, 3], 4, seed=5)
    whole = CollapseAccumulator(4, weight=weight)
    halves = [CollapseAccumulator(4, weight=weight), CollapseAccumulator(4, weight=weight)]
    parts = [slice(0, 40), slice(40, 150)]
    for acc, rows in zip(halves, parts, strict=True):
        acc.update(features[rows], labels[rows], logits[rows])
    whole.update(features, labels, logits)
    halves[0].merge(halves[1])
    halves[0].next_pass()
    whole.next_pass()
    twin = halves[0].fork()
    halves[0].update(features[parts[0]], labels[parts[0]], logits[parts[0]])
    twin.update(features[parts[1]], labels[parts[1]], logits[parts[1]])
    halves[0].merge(twin)
    whole.update(features, labels, logits)
    assert halves[0].compute() == pytest.approx(whole.compute(), rel=1e-12)
    pd.testing.assert_frame_equal(halves[0].per_class(), whole.per_class(), rtol=1e-12)
    assert halves[0].missing_classes == (1,)
