"""collapse_metrics against a direct float64 reference, exact fixtures and invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from ncrobust.collapse import class_means, collapse_metrics
from ncrobust.collapse.geometry import between_class_basis

ALWAYS = (
    "nc1", "nc1_trace_ratio", "cdnv", "nc2_equinorm", "nc2_equinorm_std", "nc2_equiangular",
    "etf_error", "gnc2", "between_class_angle",
)  # fmt: skip


def reference_metrics(
    h: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    logits: torch.Tensor | None = None,
) -> dict[str, float]:
    """The definitions written out directly: p×p covariances, pinv, per-sample loops."""
    H = h.reshape(h.shape[0], -1).double().numpy()
    Y = y.numpy()
    n, p = H.shape
    C = num_classes
    mu = np.stack([H[c == Y].mean(axis=0) for c in range(C)])
    mu_g = H.mean(axis=0)  # the count-weighted global mean is the mean of all samples
    sigma_w = np.zeros((p, p))
    for i in range(n):
        z = H[i] - mu[Y[i]]
        sigma_w += np.outer(z, z)
    sigma_w /= n
    M = (mu - mu_g).T  # p×C
    sigma_b = M @ M.T / C
    out = {"nc1": float(np.trace(scipy.linalg.pinv(sigma_b) @ sigma_w))}
    out["nc1_trace_ratio"] = float(np.trace(sigma_w) / np.trace(sigma_b))
    variance = [np.mean(np.sum((H[c == Y] - mu[c]) ** 2, axis=1)) for c in range(C)]
    upper = np.triu_indices(C, k=1)  # the pairs c < d
    pair_variance = (np.add.outer(variance, variance))[upper]
    squared_distance = np.sum((mu[:, None, :] - mu[None, :, :]) ** 2, axis=2)[upper]
    out["cdnv"] = float(np.mean(pair_variance / (2 * squared_distance)))

    def equinorm(vectors: np.ndarray) -> float:
        norms = [np.linalg.norm(v) for v in vectors]
        return float(np.std(norms, ddof=1) / np.mean(norms))

    def equiangular(vectors: np.ndarray) -> float:
        total = 0.0
        for c in range(C):
            for d in range(C):
                if c != d:
                    cos = vectors[c] @ vectors[d] / np.linalg.norm(vectors[c])
                    cos /= np.linalg.norm(vectors[d])
                    total += abs(cos + 1 / (C - 1))
        return total / (C * (C - 1))

    out["nc2_equinorm"] = equinorm(M.T)
    out["nc2_equinorm_std"] = float(np.std([np.linalg.norm(v) for v in M.T], ddof=1))
    out["nc2_equiangular"] = equiangular(M.T)
    gram = M.T @ M
    ideal = np.eye(C) - np.ones((C, C)) / C
    out["etf_error"] = float(
        np.linalg.norm(gram / np.linalg.norm(gram) - ideal / np.linalg.norm(ideal))
    )
    unit = M.T / np.linalg.norm(M.T, axis=1, keepdims=True)
    distance = np.linalg.norm(unit[:, None, :] - unit[None, :, :], axis=2)[upper]
    kernel = np.log(1.0 / distance)
    out["gnc2"] = float(np.var(kernel))
    pair_angles = [
        math.acos(np.clip(mu[c] @ mu[d] / np.linalg.norm(mu[c]) / np.linalg.norm(mu[d]), -1, 1))
        for c in range(C)
        for d in range(C)
        if c != d
    ]
    out["between_class_angle"] = float(np.mean(pair_angles))
    prediction = None
    if weight is not None:
        Wn = weight.double().numpy()
        bn = np.zeros(C) if bias is None else bias.double().numpy()
        out["nc2_equinorm_w"] = equinorm(Wn)
        out["nc2_equiangular_w"] = equiangular(Wn)
        out["nc3"] = math.sqrt(
            sum(
                np.sum((Wn[c] / np.linalg.norm(Wn[c]) - M[:, c] / np.linalg.norm(M[:, c])) ** 2)
                for c in range(C)
            )
        )
        out["nc3_frobenius"] = float(
            np.linalg.norm(Wn.T / np.linalg.norm(Wn) - M / np.linalg.norm(M)) ** 2
        )
        cos = [Wn[c] @ M[:, c] / np.linalg.norm(Wn[c]) / np.linalg.norm(M[:, c]) for c in range(C)]
        out["unc3"] = float(np.var(cos, ddof=1))
        prediction = [int(np.argmax(Wn @ H[i] + bn)) for i in range(n)]
    if logits is not None:
        prediction = [int(torch.argmax(logits[i])) for i in range(n)]
    ncc = [int(np.argmin([np.linalg.norm(H[i] - mu[c]) for c in range(C)])) for i in range(n)]
    if prediction is not None:
        out["nc4"] = sum(prediction[i] != ncc[i] for i in range(n)) / n
    if reference is not None:
        R = reference.double().numpy()
        ref_ncc = [int(np.argmin(np.linalg.norm(H[i] - R, axis=1))) for i in range(n)]
        if prediction is not None:
            out["ncc_match"] = sum(prediction[i] == ref_ncc[i] for i in range(n)) / n
        out["ncc_accuracy"] = sum(int(Y[i]) == ref_ncc[i] for i in range(n)) / n

        def angle(a: np.ndarray, b: np.ndarray) -> float:
            return math.acos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))

        R_centred = R - R.mean(axis=0)
        out["simplex_similarity"] = float(np.mean([angle(M[:, c], R_centred[c]) for c in range(C)]))
        out["angular_distance"] = float(np.mean([angle(mu[c], R[c]) for c in range(C)]))
    return out


def make_data(
    n: int, p: int, num_classes: int, seed: int, offset: float = 3.0, spread: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clustered features with a common offset (as post-ReLU features have) and every class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat(
        [torch.arange(num_classes), torch.randint(0, num_classes, (n - num_classes,), generator=g)]
    )
    centres = 2.0 * torch.randn(num_classes, p, generator=g) + offset
    features = centres[labels] + spread * torch.randn(n, p, generator=g)
    return features, labels, centres


def assert_matches(got: dict[str, float], want: dict[str, float], rtol: float = 1e-6) -> None:
    assert list(got) == list(want) or set(got) == set(want), (sorted(got), sorted(want))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=rtol, abs=1e-9), key


@pytest.mark.parametrize(
    ("n", "p", "num_classes"),
    [(120, 16, 3), (400, 48, 10), (1000, 128, 100), (300, 5, 10), (1500, 40, 100)],
    ids=["C3", "C10", "C100", "p<C-1", "C100-p<C-1"],
)
def test_matches_direct_reference(n: int, p: int, num_classes: int) -> None:
    features, labels, centres = make_data(n, p, num_classes, seed=n + p)
    g = torch.Generator().manual_seed(1)
    weight = centres - centres.mean(0) + 3.0 * torch.randn(num_classes, p, generator=g)
    bias = 4.0 * torch.randn(num_classes, generator=g)
    reference = centres + 0.3 * torch.randn(num_classes, p, generator=g)
    got = collapse_metrics(features, labels, num_classes, weight, bias, reference_means=reference)
    want = reference_metrics(features, labels, num_classes, weight, bias, reference)
    assert_matches(got, want)
    # the network output is not trivially the NCC: the rates are strictly between 0 and 1 here
    assert 0 < got["nc4"] < 1 and 0 < got["ncc_match"] < 1, got


def test_logits_take_precedence_and_shapes_are_flattened() -> None:
    features, labels, centres = make_data(200, 24, 6, seed=3)
    images = features.reshape(200, 2, 3, 4)
    logits = torch.randn(200, 6)
    weight = torch.randn(6, 24)
    got = collapse_metrics(images, labels, 6, weight, logits=logits, reference_means=centres)
    want = reference_metrics(features, labels, 6, weight, None, centres, logits=logits)
    assert_matches(got, want)
    only_logits = collapse_metrics(features, labels, 6, logits=logits)
    assert set(only_logits) == {*ALWAYS, "nc4"}
    assert only_logits["nc4"] == got["nc4"]


def test_keys_depend_on_inputs() -> None:
    features, labels, centres = make_data(60, 8, 3, seed=4)
    assert list(collapse_metrics(features, labels, 3)) == list(ALWAYS)
    with_ref = collapse_metrics(features, labels, 3, reference_means=centres)
    assert "ncc_match" not in with_ref and "ncc_accuracy" in with_ref
    with_w = collapse_metrics(features, labels, 3, weight=torch.randn(3, 8))
    assert {"nc3", "nc3_frobenius", "unc3", "nc4", "nc2_equinorm_w"} <= set(with_w)
    assert all(isinstance(v, float) for v in with_w.values())


def simplex_etf(num_classes: int, p: int, seed: int) -> torch.Tensor:
    """C×p rows of a simplex ETF: sqrt(C/(C−1)) (I − 11ᵀ/C), rotated into p dimensions."""
    etf = math.sqrt(num_classes / (num_classes - 1)) * (
        torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes
    )
    q, _ = torch.linalg.qr(
        torch.randn(
            p, num_classes, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
        )
    )
    return etf @ q.T


def test_simplex_etf_with_zero_spread_is_fully_collapsed() -> None:
    num_classes, p = 5, 12
    means = 3.0 * simplex_etf(num_classes, p, seed=0)
    labels = torch.arange(num_classes).repeat(8)
    features = means[labels].clone()
    got = collapse_metrics(features, labels, num_classes, weight=means, reference_means=means)
    for key in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc2_equinorm_w", "nc2_equiangular_w"):
        assert abs(got[key]) <= 1e-9, key
    for key in ("nc3", "nc3_frobenius", "nc4", "simplex_similarity", "angular_distance"):
        assert abs(got[key]) <= 1e-9, key
    for key in ("nc1_trace_ratio", "cdnv", "etf_error", "gnc2", "unc3"):
        assert abs(got[key]) <= 1e-12, key
    assert got["ncc_accuracy"] == 1.0 and got["ncc_match"] == 1.0


def test_hand_computed_three_classes_in_the_plane() -> None:
    # μ_0 = (2, 0), μ_1 = (0, 2), μ_2 = (−2, −2), two samples each at μ_c ± d_c with
    # d_0 = (1, 0), d_1 = (0, 1), d_2 = (1, 1); μ_G = 0.
    features = torch.tensor(
        [[3.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 1.0], [-1.0, -1.0], [-3.0, -3.0]]
    )
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    bias = torch.tensor([0.0, 0.5, -2.5])
    got = collapse_metrics(features, labels, 3, weight, bias)
    # Σ_B = (1/3)[[8, 4], [4, 8]], Σ_B⁻¹ = [[1/2, −1/4], [−1/4, 1/2]];
    # Σ_W = (1/6)·2·(d_0d_0ᵀ + d_1d_1ᵀ + d_2d_2ᵀ) = (1/3)[[2, 1], [1, 2]]; Tr(Σ_B⁻¹ Σ_W) = 1/2.
    assert got["nc1"] == pytest.approx(0.5, rel=1e-12)
    # norms 2, 2, 2√2: std/mean = √3(√2 − 1)/(2 + √2)
    assert got["nc2_equinorm"] == pytest.approx(
        math.sqrt(3) * (math.sqrt(2) - 1) / (2 + math.sqrt(2))
    )
    # cosines 0, −1/√2, −1/√2, each + 1/2 in absolute value, averaged: (√2 − 1/2)/3
    assert got["nc2_equiangular"] == pytest.approx((math.sqrt(2) - 0.5) / 3)
    # ‖w_c‖ = 1 for all c; cosines 0, −1, 0 → |·+1/2| = 1/2 each
    assert got["nc2_equinorm_w"] == pytest.approx(0.0, abs=1e-12)
    assert got["nc2_equiangular_w"] == pytest.approx(0.5)
    # only class 2 differs: ‖(−1, 0) − (−1, −1)/√2‖² = 2 − √2
    assert got["nc3"] == pytest.approx(math.sqrt(2 - math.sqrt(2)))
    # ‖W/√3 − M/4‖² = 3(1/√3 − 1/2)² + 1/4 = 2 − √3
    assert got["nc3_frobenius"] == pytest.approx(2 - math.sqrt(3))
    # W h + b for (−1, −1) is (−1, −0.5, −1.5): class 1, but its nearest mean is μ_2; the other
    # five samples agree, so nc4 = 1/6
    assert got["nc4"] == pytest.approx(1 / 6)


def test_identical_features_within_a_class_give_zero_nc1() -> None:
    means = torch.randn(4, 10, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0, 0])
    assert abs(collapse_metrics(means[labels], labels, 4)["nc1"]) <= 1e-20


def test_rank_deficient_between_class_covariance_uses_the_pseudo_inverse() -> None:
    # p = 3 < C − 1 = 5: Σ_B has full rank p and NC1 is Tr(Σ_B⁻¹ Σ_W)
    features, labels, _ = make_data(240, 3, 6, seed=7)
    got = collapse_metrics(features, labels, 6)
    assert got["nc1"] == pytest.approx(reference_metrics(features, labels, 6)["nc1"], rel=1e-9)
    # collinear class means: Σ_B has rank 1 in a 4-dimensional space
    direction = torch.randn(4, dtype=torch.float64)
    labels = torch.arange(3).repeat(20)
    line = (labels.double() - 1.0)[:, None] * direction + 0.1 * torch.randn(
        60, 4, dtype=torch.float64
    )
    got = collapse_metrics(line, labels, 3)
    assert got["nc1"] == pytest.approx(reference_metrics(line, labels, 3)["nc1"], rel=1e-6)


def test_balanced_data_drops_the_round_off_eigenvalue() -> None:
    features, labels, _ = make_data(500, 64, 10, seed=8)
    labels = torch.arange(10).repeat(50)
    means = class_means(features, labels, 10)
    _, eigenvalues, keep = between_class_basis(means - means.mean(0))
    assert eigenvalues.numel() == 10 and keep.sum() == 9 and not keep[-1]
    assert eigenvalues[-1] < 1e-25 * eigenvalues[0]


@pytest.mark.parametrize("scale", [0.01, 250.0])
def test_nc1_and_nc2_invariant_to_rotation_and_scaling(scale: float) -> None:
    features, labels, _ = make_data(300, 20, 7, seed=9)
    q, _ = torch.linalg.qr(torch.randn(20, 20, dtype=torch.float64))
    moved = scale * features.double() @ q
    before = collapse_metrics(features, labels, 7)
    after = collapse_metrics(moved, labels, 7)
    for key in ALWAYS:
        if key == "nc2_equinorm_std":  # a length: scales with the features
            assert after[key] == pytest.approx(scale * before[key], rel=1e-9), key
        else:
            assert after[key] == pytest.approx(before[key], rel=1e-9), key


def test_class_means_are_float64_means() -> None:
    features, labels, _ = make_data(90, 6, 4, seed=10)
    means = class_means(features.reshape(90, 2, 3), labels, 4)
    assert means.dtype == torch.float64 and means.shape == (4, 6)
    for c in range(4):
        torch.testing.assert_close(means[c], features[labels == c].double().mean(0))


def test_hand_computed_cdnv_and_trace_ratio_three_classes_in_the_plane() -> None:
    # the fixture above: σ_c² = ‖d_c‖² = 1, 1, 2; ‖μ_0 − μ_1‖² = 8, ‖μ_0 − μ_2‖² =
    # ‖μ_1 − μ_2‖² = 20; Tr Σ_W = (1/6)·2·(1 + 1 + 2) = 4/3, Tr Σ_B = (4 + 4 + 8)/3 = 16/3
    features = torch.tensor(
        [[3.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 1.0], [-1.0, -1.0], [-3.0, -3.0]]
    )
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    got = collapse_metrics(features, labels, 3)
    assert got["cdnv"] == pytest.approx((2 / 16 + 3 / 40 + 3 / 40) / 3, rel=1e-12)
    assert got["nc1_trace_ratio"] == pytest.approx(0.25, rel=1e-12)
    # unit centred means (1, 0), (0, 1), −(1, 1)/√2: distances √2, √(2 + √2), √(2 + √2)
    logs = np.log(1 / np.sqrt([2.0, 2 + math.sqrt(2), 2 + math.sqrt(2)]))
    assert got["gnc2"] == pytest.approx(float(np.var(logs)), rel=1e-12)


def test_two_classes_are_always_hyperspherically_uniform() -> None:
    features, labels, _ = make_data(50, 6, 2, seed=12)
    got = collapse_metrics(features, labels, 2)
    assert got["gnc2"] == pytest.approx(0.0, abs=1e-20)  # centred means are antipodal


def ill_conditioned(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Balanced float64 data whose centred class means have singular values 1, 1e-1, 1e-4 and
    1e-5 (Σ_B eigenvalues from 0.2 down to 2e-11) on a large common offset, within-class noise
    exactly centred per class; returns features, labels, U (p×4) and the singular values."""
    g = torch.Generator().manual_seed(seed)
    p, num_classes, per_class = 8, 5, 6
    u, _ = torch.linalg.qr(torch.randn(p, 4, dtype=torch.float64, generator=g))
    # V: 4 orthonormal columns orthogonal to the all-ones vector of the 5 classes
    v, _ = torch.linalg.qr(
        torch.cat(
            [torch.ones(num_classes, 1), torch.randn(num_classes, 4, generator=g)], dim=1
        ).double()
    )
    v = v[:, 1:]
    singular = torch.tensor([1.0, 1e-1, 1e-4, 1e-5], dtype=torch.float64)
    centred = (u * singular) @ v.T * math.sqrt(num_classes)  # p×C, M Mᵀ/C = U diag(s²) Uᵀ
    means = 3.0 + centred.T  # C×p
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    noise = 1e-3 * torch.randn(len(labels), p, dtype=torch.float64, generator=g)
    noise -= torch.stack([noise[labels == c].mean(0) for c in range(num_classes)])[labels]
    return means[labels] + noise, labels, u, singular


def test_ill_conditioned_between_class_covariance_stays_exact() -> None:
    features, labels, u, singular = ill_conditioned(seed=13)
    got = collapse_metrics(features, labels, 5)
    # NC1 from the construction: Σ_B^† = U diag(1/s²) Uᵀ, no p×p pseudo-inverse
    residual = features - torch.stack([features[labels == c].mean(0) for c in range(5)])[labels]
    exact = float(((residual @ u) / singular).square().sum(1).mean())
    assert got["nc1"] == pytest.approx(exact, rel=1e-7)
    # a float32 p×p pinv with its default cutoff (p·eps·λ_max) drops the two weak directions
    sigma_w = (residual.T @ residual / len(labels)).float()
    centred = torch.stack([features[labels == c].mean(0) for c in range(5)]) - features.mean(0)
    sigma_b = (centred.T @ centred / 5).float()
    float32 = float(torch.trace(torch.linalg.pinv(sigma_b) @ sigma_w))
    assert abs(float32 - exact) > 0.5 * exact
    # the new measures need no pseudo-inverse and match the direct float64 definitions
    want = reference_metrics(features, labels, 5)
    for key in ("nc1_trace_ratio", "cdnv", "nc2_equinorm", "nc2_equiangular", "etf_error", "gnc2"):
        assert got[key] == pytest.approx(want[key], rel=1e-9), key


@pytest.mark.parametrize("scale", [0.01, 250.0])
def test_weight_measures_invariant_to_a_common_rotation_and_scaling(scale: float) -> None:
    features, labels, centres = make_data(300, 20, 7, seed=14)
    weight = centres - centres.mean(0) + torch.randn(7, 20, generator=torch.Generator())
    q, _ = torch.linalg.qr(torch.randn(20, 20, dtype=torch.float64))
    before = collapse_metrics(features, labels, 7, weight)
    after = collapse_metrics(scale * features.double() @ q, labels, 7, 3.0 * weight.double() @ q)
    for key in ("unc3", "nc3", "nc3_frobenius", "nc4"):
        assert after[key] == pytest.approx(before[key], rel=1e-9, abs=1e-15), key
    assert before["unc3"] > 1e-4  # the fixture is not trivially uniform


def test_etf_error_and_gnc2_see_a_distorted_simplex() -> None:
    etf = simplex_etf(6, 10, seed=15)
    labels = torch.arange(6).repeat(3)
    squeezed = etf.clone()
    squeezed[0] *= 0.5  # one shorter mean, re-centred: the angles change too
    squeezed -= squeezed.mean(0)
    got = collapse_metrics(squeezed[labels], labels, 6)
    assert got["etf_error"] > 1e-2 and got["gnc2"] > 1e-4
    exact = collapse_metrics(7.0 * etf[labels] + 1.0, labels, 6)
    assert exact["etf_error"] == pytest.approx(0.0, abs=1e-12)
    assert exact["gnc2"] == pytest.approx(0.0, abs=1e-12)
