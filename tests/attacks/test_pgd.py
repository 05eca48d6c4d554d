"""Properties of pgd: feasibility, reproducibility, no side effects on the model, layouts."""

from __future__ import annotations

import pytest
import torch

from ncrobust.attacks import NORMS, pgd, target_labels

BUDGETS = {"linf": (0.1, 0.04), "l2": (0.5, 0.3)}


def _distance(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("random_start", [False, True])
@pytest.mark.parametrize("norm", NORMS)
def test_every_output_is_in_the_ball_and_in_the_pixel_box(
    make_model, make_batch, norm, random_start, targeted
) -> None:
    model = make_model()
    x, y = make_batch(64)
    eps, alpha = BUDGETS[norm]
    x_adv = pgd(
        model,
        x,
        y,
        norm=norm,
        eps=eps,
        alpha=alpha,
        steps=4,
        random_start=random_start,
        targeted=targeted,
    )
    dist = _distance(x_adv - x, norm)
    assert bool((dist <= eps * (1 + 1e-9)).all())
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # the projection is active: with 4 steps of alpha > eps/2 most samples reach the boundary
    # (l_2 ends a little inside it where the [0,1] clamp cut the projected perturbation)
    assert (dist > eps * 0.9).float().mean() > 0.5


@pytest.mark.parametrize("norm", NORMS)
def test_seeded_generator_reproduces_and_different_seeds_differ(
    make_model, make_batch, norm
) -> None:
    model = make_model()
    x, y = make_batch(16)
    eps, alpha = BUDGETS[norm]

    def run(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return pgd(model, x, y, norm=norm, eps=eps, alpha=alpha, steps=2, generator=g)

    torch.manual_seed(5)
    first = run(0)
    torch.manual_seed(6)  # the global RNG plays no part when a generator is given
    assert torch.equal(first, run(0))
    assert not torch.equal(first, run(1))


def test_global_rng_is_used_without_a_generator(make_model, make_batch) -> None:
    model = make_model()
    x, y = make_batch(16)
    torch.manual_seed(3)
    a = pgd(model, x, y, eps=0.1, alpha=0.02, steps=1)
    torch.manual_seed(3)
    b = pgd(model, x, y, eps=0.1, alpha=0.02, steps=1)
    c = pgd(model, x, y, eps=0.1, alpha=0.02, steps=1)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm", NORMS)
def test_no_parameter_grad_and_mode_unchanged(
    make_model, make_batch, norm, targeted, training
) -> None:
    model = make_model().train(training)
    x, y = make_batch(16)
    eps, alpha = BUDGETS[norm]
    pgd(model, x, y, norm=norm, eps=eps, alpha=alpha, steps=2, targeted=targeted)
    assert all(p.grad is None for p in model.parameters())
    assert model.training is training
    assert all(m.training is training for m in model.modules())


def test_input_requiring_grad_is_left_alone_and_output_is_detached(make_model, make_batch) -> None:
    model = make_model()
    x, y = make_batch(8)
    x = x.clone().requires_grad_(True)
    x_before = x.detach().clone()
    x_adv = pgd(model, x, y, eps=0.1, alpha=0.02, steps=2)
    assert x.grad is None and torch.equal(x.detach(), x_before)
    assert not x_adv.requires_grad and x_adv.grad_fn is None


def test_works_inside_no_grad(make_model, make_batch) -> None:
    model = make_model()
    x, y = make_batch(8)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        inside = pgd(model, x, y, eps=0.1, alpha=0.02, steps=2, generator=g)
    g = torch.Generator().manual_seed(0)
    outside = pgd(model, x, y, eps=0.1, alpha=0.02, steps=2, generator=g)
    assert torch.equal(inside, outside)


@pytest.mark.parametrize("norm", NORMS)
def test_channels_last_and_dtype_are_kept(make_model, make_batch, norm) -> None:
    model = make_model(dtype=torch.float32).to(memory_format=torch.channels_last)
    x, y = make_batch(8, dtype=torch.float32)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    eps, alpha = BUDGETS[norm]
    kwargs = dict(norm=norm, eps=eps, alpha=alpha, steps=3, random_start=False)
    out_cl = pgd(model, x_cl, y, **kwargs)
    out = pgd(model, x, y, **kwargs)
    assert out_cl.dtype == torch.float32 and out_cl.shape == x.shape
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_cl, out, atol=1e-5, rtol=0)


def test_eps_zero_returns_the_input(make_model, make_batch) -> None:
    model = make_model()
    x, y = make_batch(8)
    for norm in NORMS:
        assert torch.equal(pgd(model, x, y, norm=norm, eps=0.0, alpha=0.1, steps=2), x)


def test_flat_inputs_for_mlps() -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x, y = torch.rand(10, 6), torch.randint(0, 3, (10,))
    x_adv = pgd(mlp, x, y, norm="l2", eps=0.3, alpha=0.1, steps=3)
    assert x_adv.shape == x.shape and bool(((x_adv - x).norm(dim=1) <= 0.3 + 1e-6).all())


def test_target_labels_is_the_class_balanced_shift() -> None:
    y = torch.tensor([0, 1, 2, 9, 9])
    assert target_labels(y, 10).tolist() == [1, 2, 3, 0, 0]
    # balanced: on balanced labels every class is the target equally often, never its own
    shifted = target_labels(torch.arange(10).repeat(3), 10)
    assert torch.bincount(shifted, minlength=10).tolist() == [3] * 10
    assert not bool((shifted == torch.arange(10).repeat(3)).any())
    with pytest.raises(ValueError, match="num_classes"):
        target_labels(y, 1)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        target_labels(y, 5)


@pytest.mark.parametrize("norm", NORMS)
def test_under_bf16_autocast_the_update_stays_in_the_input_dtype(
    make_model, make_batch, norm
) -> None:
    """CPU autocast exercises the same code path as the CUDA bf16 one."""
    model = make_model(dtype=torch.float32)
    x, y = make_batch(32, dtype=torch.float32)
    eps, alpha = BUDGETS[norm]
    kwargs = dict(norm=norm, eps=eps, alpha=alpha, steps=5, random_start=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).dtype == torch.bfloat16  # autocast is really on
        x_adv = pgd(model, x, y, **kwargs)
    assert x_adv.dtype == torch.float32
    assert bool((_distance(x_adv - x, norm) <= eps * (1 + 1e-6)).all())
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        loss_clean = torch.nn.functional.cross_entropy(model(x), y)
        loss_adv = torch.nn.functional.cross_entropy(model(x_adv), y)
        loss_fp32_attack = torch.nn.functional.cross_entropy(model(pgd(model, x, y, **kwargs)), y)
    assert loss_adv > loss_clean + 0.1
    assert abs(float(loss_adv - loss_fp32_attack)) < 0.2 * float(loss_fp32_attack - loss_clean)


class _SyncGuard(torch.nn.Module):
    """Turns CUDA's sync debug mode to 'error' once the attack loop starts (first forward)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.cuda.set_sync_debug_mode("error")
        return self.model(x)


@pytest.mark.gpu
@pytest.mark.parametrize("norm", NORMS)
def test_no_host_sync_inside_the_loop_on_cuda(make_model, make_batch, norm) -> None:
    model = _SyncGuard(make_model(dtype=torch.float32).cuda())
    x, y = make_batch(32, dtype=torch.float32)
    x, y = x.cuda(), y.cuda()
    eps, alpha = BUDGETS[norm]
    g = torch.Generator(device="cuda").manual_seed(0)
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            x_adv = pgd(model, x, y, norm=norm, eps=eps, alpha=alpha, steps=3, generator=g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x_adv.dtype == torch.float32 and x_adv.is_cuda
