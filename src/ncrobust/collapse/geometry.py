"""Neural Collapse quantities that depend only on class means and classifier weights (NC2, NC3,
simplex comparisons) and the eigenbasis of Σ_B that makes NC1 exact without a p×p matrix.

Everything takes float64 matrices with one row per class (``M`` here is C×p, the transpose of
the paper's p×C) and returns 0-dim tensors; 0/0 (e.g. all class means equal) gives NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def between_class_basis(centred_means: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Eigenvectors U (p×k, orthonormal, k = min(p, C)) and eigenvalues Λ (k) of Σ_B = M Mᵀ / C
    from a thin SVD of M/√C, and the mask of the eigenvalues Σ_B^† keeps.

    An eigenvalue is kept when λ > p · eps(float64) · λ_max: the default cutoff of
    ``torch.linalg.pinv`` / ``scipy.linalg.pinv`` applied to the p×p Σ_B. The count-weighted
    centring makes M rank ≤ C−1, so the C-th singular value is round-off (≈ eps · σ_max, i.e.
    λ ≈ eps² · λ_max) and always falls below the cutoff. U spans every column of M, dropped
    directions included, so ⟨h, μ_c − μ_G⟩ = ⟨Uᵀh, Uᵀ(μ_c − μ_G)⟩ exactly.
    """
    num_classes, p = centred_means.shape
    u, s, _ = torch.linalg.svd(centred_means.T / math.sqrt(num_classes), full_matrices=False)
    eigenvalues = s.square()
    keep = eigenvalues > p * torch.finfo(torch.float64).eps * eigenvalues.max()
    return u, eigenvalues, keep


def equinorm(vectors: Tensor) -> Tensor:
    """std_c ‖v_c‖ / mean_c ‖v_c‖ over the rows (unbiased std, as ``torch.std``)."""
    norms = vectors.norm(dim=1)
    return norms.std() / norms.mean()


def norm_spread(vectors: Tensor) -> Tensor:
    """std_c ‖v_c‖ over the rows (unbiased): the paper text's equinorm, not divided by the mean."""
    return vectors.norm(dim=1).std()


def pairwise_angle(vectors: Tensor) -> Tensor:
    """avg_{c≠c'} of the angle (radians) between the rows v_c and v_c': for non-centred class
    means, the baseline against which a non-centred leap angle is small or large."""
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    return _upper((unit @ unit.T).clamp(-1.0, 1.0).arccos()).mean()


def equiangular(vectors: Tensor) -> Tensor:
    """avg_{c≠c'} |cos(v_c, v_c') + 1/(C−1)| over the rows: zero for a simplex ETF."""
    num_classes = vectors.shape[0]
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    gram = unit @ unit.T + 1.0 / (num_classes - 1)
    off_diagonal = ~torch.eye(num_classes, dtype=torch.bool, device=vectors.device)
    return gram[off_diagonal].abs().mean()


def nc3(weight: Tensor, centred_means: Tensor) -> Tensor:
    """sqrt(Σ_c ‖w_c/‖w_c‖ − (μ_c−μ_G)/‖μ_c−μ_G‖‖²): the paper's self-duality distance."""
    w_unit = weight / weight.norm(dim=1, keepdim=True)
    m_unit = centred_means / centred_means.norm(dim=1, keepdim=True)
    return (w_unit - m_unit).square().sum().sqrt()


def nc3_frobenius(weight: Tensor, centred_means: Tensor) -> Tensor:
    """‖W/‖W‖_F − Mᵀ/‖M‖_F‖_F²: the self-duality distance of Papyan et al. and the released code."""
    return (weight / weight.norm() - centred_means / centred_means.norm()).square().sum()


def angles(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise angle (radians) between a_c and b_c: arccos of the cosine clamped to [−1, 1].

    Computed as 2·atan2(‖â − b̂‖, ‖â + b̂‖) with â = a/‖a‖, which equals that arccos but keeps
    full precision near 0 and π (arccos(1 − eps) is already 1.5e-8); zero vectors give NaN.
    """
    a_unit = a / a.norm(dim=1, keepdim=True)
    b_unit = b / b.norm(dim=1, keepdim=True)
    return 2.0 * torch.atan2((a_unit - b_unit).norm(dim=1), (a_unit + b_unit).norm(dim=1))


def mean_angle(a: Tensor, b: Tensor) -> Tensor:
    """avg_c of the angle between a_c and b_c, in radians."""
    return angles(a, b).mean()


def simplex_similarity(
    means: Tensor, global_mean: Tensor, other_means: Tensor, other_global_mean: Tensor
) -> Tensor:
    """avg_c arccos⟨μ̃_c, μ̃′_c⟩, each set of class means centred by its own global mean."""
    return mean_angle(means - global_mean, other_means - other_global_mean)


def angular_distance(means: Tensor, other_means: Tensor) -> Tensor:
    """avg_c arccos⟨μ_c/‖μ_c‖, μ′_c/‖μ′_c‖⟩ of the non-centred class means."""
    return mean_angle(means, other_means)


def cosines(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cos(a_c, b_c) = ⟨a_c, b_c⟩ / (‖a_c‖ ‖b_c‖); a zero row gives NaN."""
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))


def _distances(vectors: Tensor) -> Tensor:
    """C×C matrix of ‖v_c − v_c′‖ over the rows, each difference formed explicitly (no
    Gram-matrix cancellation) and never as a C×C×p tensor."""
    return torch.cdist(vectors, vectors, compute_mode="donot_use_mm_for_euclid_dist")


def _upper(matrix: Tensor) -> Tensor:
    """The entries above the diagonal: one per unordered pair c < c′."""
    size = matrix.shape[0]
    rows, cols = torch.triu_indices(size, size, offset=1, device=matrix.device)
    return matrix[rows, cols]


def _cdnv_terms(centred_means: Tensor, variances: Tensor) -> Tensor:
    """C×C matrix of (σ_c² + σ_c′²) / (2‖μ_c − μ_c′‖²), 0 on the diagonal."""
    terms = (variances[:, None] + variances[None, :]) / (2.0 * _distances(centred_means).square())
    return terms.fill_diagonal_(0.0)


def cdnv(centred_means: Tensor, variances: Tensor) -> Tensor:
    """Class-distance normalised variance (Galanti et al., 2022): the average over class pairs
    c ≠ c′ of (σ_c² + σ_c′²) / (2‖μ_c − μ_c′‖²), σ_c² the mean of ‖h_i − μ_c‖² over class c."""
    return _upper(_cdnv_terms(centred_means, variances)).mean()


def cdnv_per_class(centred_means: Tensor, variances: Tensor) -> Tensor:
    """For each class c, the average over c′ ≠ c of its CDNV term (their mean is ``cdnv``)."""
    return _cdnv_terms(centred_means, variances).sum(dim=1) / (centred_means.shape[0] - 1)


def trace_ratio(within_trace: Tensor, centred_means: Tensor) -> Tensor:
    """Tr(Σ_W) / Tr(Σ_B) with Tr(Σ_B) = (1/C) Σ_c ‖μ_c − μ_G‖² (Σ_B = M Mᵀ / C)."""
    return within_trace / centred_means.square().sum(dim=1).mean()


def etf_error(centred_means: Tensor) -> Tensor:
    """‖M̃M̃ᵀ/‖M̃M̃ᵀ‖_F − (I − 11ᵀ/C)/‖I − 11ᵀ/C‖_F‖_F: the distance of the normalised Gram
    matrix of the centred class means from a simplex ETF's (‖I − 11ᵀ/C‖_F = √(C−1))."""
    num_classes = centred_means.shape[0]
    gram = centred_means @ centred_means.T
    ideal = torch.eye(num_classes, dtype=gram.dtype, device=gram.device) - 1.0 / num_classes
    return torch.linalg.matrix_norm(
        gram / torch.linalg.matrix_norm(gram) - ideal / math.sqrt(num_classes - 1)
    )


def gnc2(centred_means: Tensor) -> Tensor:
    """Hyperspherical uniformity (GNC2, Wu & Papyan 2024, after Liu et al. 2023): the variance
    over the class pairs c < c′ (population variance: the mean squared deviation) of the
    logarithmic inverse-distance kernel log(1/‖μ̂_c − μ̂_c′‖) of the normalised centred means
    μ̂_c = μ̃_c/‖μ̃_c‖. Zero when every pair is equidistant on the sphere (a simplex ETF, and
    always for two classes, whose centred means are antipodal)."""
    unit = centred_means / centred_means.norm(dim=1, keepdim=True)
    return (-_upper(_distances(unit)).log()).var(correction=0)


def unc3(weight: Tensor, centred_means: Tensor) -> Tensor:
    """Uniform duality (UNC3, Wu & Papyan 2024): the variance (unbiased, as ``torch.var``)
    across classes of cos(w_c, μ_c − μ_G). Zero when every classifier makes the same angle with
    its centred class mean, whether or not that angle is zero (NC3's self-duality)."""
    return cosines(weight, centred_means).var()
