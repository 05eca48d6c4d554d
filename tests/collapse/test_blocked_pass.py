"""Pass 2 in cache-sized blocks of chunks equals the whole-batch float64 computation it replaced:
every pass-2 quantity to ~1e-12 relative, with blocks and chunks cut at awkward places."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from ncrobust.collapse import _sums, collapse_metrics
from ncrobust.collapse.geometry import between_class_basis, cdnv, cdnv_per_class


def previous_computation(
    h: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    weight: torch.Tensor,
    bias: torch.Tensor,
    reference: torch.Tensor,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The pass-2 quantities over the whole batch at once, each N-row quantity a full tensor:
    h − μ_y in float64, its projection on Σ_B's eigenbasis and row norms, and the nearest class
    centre from the explicit distances ‖h − μ_c‖."""
    H = h.double()
    counts = torch.bincount(y, minlength=num_classes).double()
    means = torch.zeros(num_classes, H.shape[1], dtype=torch.float64).index_add_(0, y, H)
    means /= counts[:, None]
    centred = means - H.mean(dim=0)
    basis, eigenvalues, keep = between_class_basis(centred)
    difference = H - means[y]
    projected = (difference @ basis)[:, keep] / eigenvalues[keep].sqrt()
    within = difference.square().sum(dim=1)
    sigma2 = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, y, within) / counts
    prediction = (H @ weight.double().T + bias.double()).argmax(dim=1)
    nearest = torch.cdist(H, means).argmin(dim=1)
    nearest_ref = torch.cdist(H, reference.double()).argmin(dim=1)

    def per_class(hit: torch.Tensor) -> torch.Tensor:
        return torch.zeros(num_classes, dtype=torch.float64).index_add_(0, y, hit.double()) / counts

    n = H.shape[0]
    values = {
        "nc1": float(projected.square().sum() / n),
        "nc1_trace_ratio": float(within.sum() / n / centred.square().sum(dim=1).mean()),
        "cdnv": float(cdnv(centred, sigma2)),
        "nc4": float((prediction != nearest).double().mean()),
        "ncc_accuracy": float((nearest_ref == y).double().mean()),
        "ncc_match": float((prediction == nearest_ref).double().mean()),
    }
    table = {
        "sigma2": sigma2,
        "cdnv": cdnv_per_class(centred, sigma2),
        "nc4": per_class(prediction != nearest),
        "ncc_accuracy": per_class(nearest_ref == y),
        "ncc_match": per_class(prediction == nearest_ref),
    }
    return values, table


@pytest.mark.parametrize("num_classes", [5, 40])  # one-hot and gathered subtraction of μ_y
@pytest.mark.parametrize(("chunk", "block"), [(8, 20), (7, 7), (64, 1)])
def test_blocked_pass_two_equals_the_whole_batch_computation(
    monkeypatch: pytest.MonkeyPatch, num_classes: int, chunk: int, block: int
) -> None:
    p, n = 16, 203  # n is a multiple of neither the chunk nor the block
    monkeypatch.setitem(_sums.CHUNK_ELEMENTS, "cpu", chunk * p)
    width = min(p, num_classes) + 2 * num_classes  # k′: columns of U, R̃ and W
    monkeypatch.setattr(_sums, "BLOCK_ELEMENTS", block * width)
    g = torch.Generator().manual_seed(num_classes + chunk)
    y = torch.cat(
        [torch.arange(num_classes), torch.randint(0, num_classes, (n - num_classes,), generator=g)]
    )
    centres = 2.0 * torch.randn(num_classes, p, generator=g) + 3.0  # a large common component
    h = centres[y] + 3.0 * torch.randn(n, p, generator=g)
    weight = centres - centres.mean(dim=0) + 0.5 * torch.randn(num_classes, p, generator=g)
    bias = torch.randn(num_classes, generator=g)
    reference = centres + 0.5 * torch.randn(num_classes, p, generator=g)

    got, table = collapse_metrics(
        h, y, num_classes, weight, bias, reference_means=reference, per_class=True
    )
    want, want_table = previous_computation(h, y, num_classes, weight, bias, reference)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert 0.0 < got["nc4"] < 1.0 and 0.0 < got["ncc_accuracy"] < 1.0  # not vacuous
    wide = table.pivot(index="class", columns="metric", values="value")
    for name, column in want_table.items():
        pd.testing.assert_series_equal(
            wide[name], pd.Series(column.numpy(), index=wide.index, name=name), rtol=1e-12
        )
