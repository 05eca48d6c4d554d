"""Figure 7 statistics of perturbed data against a direct per-class computation."""

from __future__ import annotations

import math

import pytest
import torch

from ncrobust.collapse import AttackStatistics


def direct(features: torch.Tensor, predictions: torch.Tensor, clean: torch.Tensor) -> dict:
    out: dict[str, list] = {
        "counts": [],
        "clean_mean_norm": [],
        "predicted_mean_norm": [],
        "angle": [],
    }
    for c in range(clean.shape[0]):
        chosen = features[predictions == c].double()
        out["counts"].append(len(chosen))
        out["clean_mean_norm"].append(clean[c].double().norm().item())
        if len(chosen) == 0:
            out["predicted_mean_norm"].append(math.nan)
            out["angle"].append(math.nan)
            continue
        mean = chosen.mean(0)
        out["predicted_mean_norm"].append(mean.norm().item())
        cos = (mean @ clean[c].double() / mean.norm() / clean[c].double().norm()).item()
        out["angle"].append(math.acos(max(-1.0, min(1.0, cos))))
    return out


def perturbed(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = 2.0 * torch.randn(6, 10, generator=g) + 1.0
    predictions = torch.randint(0, 5, (200,), generator=g)  # class 5 is never predicted
    features = clean[predictions] + 0.7 * torch.randn(200, 10, generator=g)
    return features, predictions, clean


def assert_stats_close(got: dict, want: dict) -> None:
    assert got["counts"] == want["counts"]
    for key in ("clean_mean_norm", "predicted_mean_norm", "angle"):
        torch.testing.assert_close(
            torch.tensor(got[key], dtype=torch.float64),
            torch.tensor(want[key], dtype=torch.float64),
            rtol=1e-9,
            atol=1e-12,
            equal_nan=True,
        )


def test_matches_direct_computation_with_nan_for_unpredicted_classes() -> None:
    features, predictions, clean = perturbed()
    stats = AttackStatistics(6, clean)
    for rows in torch.arange(200).split(37):
        stats.update(features[rows], predictions[rows])
    got = stats.compute()
    assert_stats_close(got, direct(features, predictions, clean))
    assert got["counts"][5] == 0 and math.isnan(got["angle"][5])
    assert all(0 < a < 0.5 for a in got["angle"][:5])  # perturbed features sit near their class
    assert_stats_close(stats.compute(), got)  # idempotent


def test_merge_of_a_split_equals_one_pass() -> None:
    features, predictions, clean = perturbed(1)
    a, b = AttackStatistics(6, clean), AttackStatistics(6, clean)
    a.update(features[:80], predictions[:80])
    b.update(features[80:].reshape(120, 2, 5), predictions[80:])
    a.merge(b)
    assert_stats_close(a.compute(), direct(features, predictions, clean))
    with pytest.raises(ValueError, match="update\\(\\) after compute"):
        a.update(features, predictions)
    with pytest.raises(ValueError, match="different classes or clean means"):
        AttackStatistics(6, clean + 1).merge(AttackStatistics(6, clean))


def test_centred_statistics_use_each_sets_own_global_mean() -> None:
    features, predictions, clean = perturbed(2)
    clean_centre = clean.double().mean(0)
    stats = AttackStatistics(6, clean, clean_global_mean=clean_centre)
    stats.update(features, predictions)
    got = stats.compute()
    perturbed_centre = features.double().mean(0)
    want = direct(features - perturbed_centre.float(), predictions, clean - clean_centre.float())
    # recompute the centred values in float64 for the comparison
    for c in range(5):
        mean = features[predictions == c].double().mean(0) - perturbed_centre
        centred = clean[c].double() - clean_centre
        want["predicted_mean_norm"][c] = mean.norm().item()
        want["clean_mean_norm"][c] = centred.norm().item()
        want["angle"][c] = math.acos((mean @ centred / mean.norm() / centred.norm()).item())
    want["clean_mean_norm"][5] = (clean[5].double() - clean_centre).norm().item()
    assert_stats_close(got, want)
