"""gaussian: the noise's statistics, the clamp, reproducibility, layout."""

from __future__ import annotations

import torch

from ncrobust.attacks import gaussian


def test_noise_has_zero_mean_and_the_given_std_away_from_the_borders() -> None:
    x = torch.full((64, 3, 16, 16), 0.5)
    std = 8 / 255
    noise = gaussian(x, std, generator=torch.Generator().manual_seed(0)) - x
    n = noise.numel()
    assert abs(float(noise.mean())) < 4 * std / n**0.5
    assert abs(float(noise.std()) / std - 1) < 0.01
    # per pixel independent: neighbouring pixels are uncorrelated
    corr = torch.corrcoef(torch.stack([noise[..., :-1].flatten(), noise[..., 1:].flatten()]))
    assert abs(float(corr[0, 1])) < 0.02


def test_output_is_clamped_to_the_pixel_box() -> None:
    x = torch.cat([torch.zeros(32, 1, 8, 8), torch.ones(32, 1, 8, 8)])
    out = gaussian(x, 0.1, generator=torch.Generator().manual_seed(1))
    assert out.min() == 0 and out.max() == 1
    at_border = (out[:32] == 0).float().mean(), (out[32:] == 1).float().mean()
    assert all(abs(float(f) - 0.5) < 0.05 for f in at_border)  # half the draws push outside


def test_reproducible_layout_kept_and_zero_std_is_identity() -> None:
    x = torch.rand(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    a = gaussian(x, 0.05, generator=torch.Generator().manual_seed(2))
    b = gaussian(x, 0.05, generator=torch.Generator().manual_seed(2))
    c = gaussian(x, 0.05, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.is_contiguous(memory_format=torch.channels_last) and a.dtype == x.dtype
    assert torch.equal(gaussian(x, 0.0), x)
    torch.manual_seed(7)
    d = gaussian(x, 0.05)
    torch.manual_seed(7)
    assert torch.equal(d, gaussian(x, 0.05))
