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
