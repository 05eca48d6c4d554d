"""``ncrobust bench attacks``: PGD throughput of :func:`ncrobust.attacks.pgd` vs the released loop.

The baseline mimics the released code's ``attack_pgd`` (restarts = 1): fp32, contiguous
tensors, ``loss.backward()`` on a ``delta`` leaf (so every parameter's ``.grad`` is filled
too), in-place ``delta.data`` updates, clamps with tensor bounds, and the final extra forward
that keeps the highest-loss restart. The fast path is ``pgd``: input-only gradients via
``torch.autograd.grad`` and one fused clamp per step, plus bf16 autocast and channels_last on
CUDA (on CPU both paths run fp32, contiguous). Both attack the same weights, in train mode as
in PGD-AT, on synthetic uint8-like 3x32x32 images with 10 classes; batches alternate between
the two paths so drift in machine load hits both alike, and rates come from the median batch
time with the spread of the times printed as a noise indicator.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncrobust.attacks import NORMS, pgd
from ncrobust.errors import UsageError
from ncrobust.runtime import autocast, resolve_device, seed_everything

PAPER_MODELS = ("vgg11_bn", "preact_resnet18")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
# The paper's CIFAR threat models: (eps, alpha) in pixel units.
THREATS = {"linf": (8 / 255, 2 / 255), "l2": (128 / 255, 15 / 255)}
NUM_CLASSES = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust bench attacks``."""
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(PAPER_MODELS),
        metavar="NAME",
        help="registry names of the models to attack (default: the paper's)",
    )
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch")
    parser.add_argument(
        "--batches",
        type=int,
        default=None,
        help="timed batches per path (default: 20 on CUDA, 2 on CPU)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed batches per path first (default: 3 on CUDA, 1 on CPU)",
    )
    parser.add_argument("--steps", type=int, default=10, help="PGD steps")
    parser.add_argument(
        "--norm",
        choices=NORMS,
        default="linf",
        help="threat model: linf eps 8/255 step 2/255, l2 eps 128/255 step 15/255",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and data")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: small_cnn on 3x16x16, batch 16, 2 steps, 1 timed batch",
    )


@dataclass(frozen=True)
class Plan:
    """What one benchmark run measures."""

    models: tuple[str, ...]
    image_size: int
    batch_size: int
    batches: int
    warmup: int
    steps: int
    norm: str
    device: torch.device


def make_plan(args: argparse.Namespace) -> Plan:
    """Resolve defaults (device dependent) and validate the flags before any work."""
    from ncrobust.models import available_models

    device = resolve_device(args.device)
    on_cuda = device.type == "cuda"
    unknown = [name for name in args.models if name not in available_models()]
    if unknown:
        raise UsageError(
            f"unknown model(s) {', '.join(unknown)}; available: {', '.join(available_models())}"
        )
    if args.quick:
        return Plan(("small_cnn",), 16, 16, 1, 1, 2, args.norm, device)
    batches = args.batches if args.batches is not None else (20 if on_cuda else 2)
    warmup = args.warmup if args.warmup is not None else (3 if on_cuda else 1)
    for name, value, low in [
        ("--batch-size", args.batch_size, 1),
        ("--batches", batches, 1),
        ("--warmup", warmup, 0),
        ("--steps", args.steps, 1),
    ]:
        if value < low:
            raise UsageError(f"{name} must be >= {low}, got {value}")
    return Plan(
        tuple(args.models), 32, args.batch_size, batches, warmup, args.steps, args.norm, device
    )


def build_model(name: str, image_size: int, device: torch.device) -> nn.Module:
    """A registry model for 3-channel CIFAR-like input, in train mode on ``device``."""
    from ncrobust.models import create_model

    model = create_model(
        name,
        num_classes=NUM_CLASSES,
        in_channels=3,
        image_size=image_size,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )
    return model.to(device).train()


def released_style_pgd(
    model: nn.Module, x: Tensor, y: Tensor, *, norm: str, eps: float, alpha: float, steps: int
) -> Tensor:
    """The released code's attack_pgd (one restart, no early stop), kept as a timing baseline."""
    lower, upper = torch.zeros_like(x), torch.ones_like(x)
    max_loss = torch.zeros(y.shape[0], device=x.device)
    max_delta = torch.zeros_like(x)
    delta = torch.zeros_like(x)
    if norm == "linf":
        delta.uniform_(-eps, eps)
    else:
        delta.normal_()
        n = delta.view(delta.size(0), -1).norm(p=2, dim=1).view(-1, 1, 1, 1)
        delta *= torch.zeros_like(n).uniform_(0, 1) / n * eps
    delta = torch.max(torch.min(delta, upper - x), lower - x)
    delta.requires_grad = True
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()  # fills every parameter's .grad as well
        assert delta.grad is not None
        grad = delta.grad.detach()
        d = delta[:, :, :, :]
        if norm == "linf":
            d = torch.clamp(d + alpha * torch.sign(grad), min=-eps, max=eps)
        else:
            g_norm = torch.norm(grad.view(grad.shape[0], -1), dim=1).view(-1, 1, 1, 1)
            d = (d + grad / (g_norm + 1e-10) * alpha).view(d.size(0), -1)
            d = d.renorm(p=2, dim=0, maxnorm=eps).view_as(x)
        d = torch.max(torch.min(d, upper - x), lower - x)
        delta.data[:, :, :, :] = d
        delta.grad.zero_()
    all_loss = F.cross_entropy(model(x + delta), y, reduction="none")
    keep = all_loss >= max_loss
    max_delta[keep] = delta.detach()[keep]
    return max_delta


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call takes, synchronising the device around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@dataclass(frozen=True)
class Result:
    """Throughput of both paths on one model, from the median batch time of each."""

    baseline_rate: float
    fast_rate: float
    spread: float  # largest (max - min) / median batch time of the two paths: timing noise

    @property
    def ratio(self) -> float:
        return self.fast_rate / self.baseline_rate


def summarise(baseline_seconds: list[float], fast_seconds: list[float], batch_size: int) -> Result:
    """Images/s from the median batch time of each path, plus the relative spread of the times."""
    medians = [statistics.median(t) for t in (baseline_seconds, fast_seconds)]
    pairs = zip((baseline_seconds, fast_seconds), medians, strict=True)
    spread = max((max(t) - min(t)) / m for t, m in pairs)
    return Result(batch_size / medians[0], batch_size / medians[1], spread)


def measure(name: str, plan: Plan) -> Result:
    """Time baseline and fast PGD on ``name`` (identical weights), batches alternating."""
    device = plan.device
    on_cuda = device.type == "cuda"
    baseline_model = build_model(name, plan.image_size, device)
    fast_model = copy.deepcopy(baseline_model)
    if on_cuda:
        fast_model = fast_model.to(memory_format=torch.channels_last)
    eps, alpha = THREATS[plan.norm]
    shape = (plan.batch_size, 3, plan.image_size, plan.image_size)
    pixels = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    x = pixels.float().div_(255)
    x_fast = x.contiguous(memory_format=torch.channels_last) if on_cuda else x
    y = torch.randint(0, NUM_CLASSES, (plan.batch_size,), device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    precision = "bf16" if on_cuda else "fp32"

    def baseline() -> Tensor:
        return released_style_pgd(
            baseline_model, x, y, norm=plan.norm, eps=eps, alpha=alpha, steps=plan.steps
        )

    def fast() -> Tensor:
        with autocast(device, precision):
            return pgd(
                fast_model,
                x_fast,
                y,
                norm=plan.norm,
                eps=eps,
                alpha=alpha,
                steps=plan.steps,
                generator=generator,
            )

    for _ in range(plan.warmup):
        _timed(baseline, device)
        _timed(fast, device)
    baseline_seconds, fast_seconds = [], []
    for _ in range(plan.batches):
        baseline_seconds.append(_timed(baseline, device))
        fast_seconds.append(_timed(fast, device))
    return summarise(baseline_seconds, fast_seconds, plan.batch_size)


def run(args: argparse.Namespace) -> int:
    """Print images/s of released-style and ncrobust PGD for each model, and their ratio."""
    plan = make_plan(args)
    seed_everything(args.seed)
    if plan.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    on_cuda = plan.device.type == "cuda"
    eps, alpha = THREATS[plan.norm]
    fast_label = "bf16 autocast + channels_last" if on_cuda else "fp32 (CPU: no bf16/channels_last)"
    print(
        f"PGD-{plan.steps} {plan.norm} eps {eps * 255:g}/255 step {alpha * 255:g}/255 | "
        f"batch {plan.batch_size} x 3x{plan.image_size}x{plan.image_size}, C={NUM_CLASSES} | "
        f"{plan.batches} timed + {plan.warmup} warm-up batches per path | device {plan.device}"
        f" | threads {torch.get_num_threads()} | models in train mode"
    )
    print(f"baseline: released attack_pgd style, fp32; ncrobust: pgd, {fast_label}")
    print("img/s from the median batch time; spread = (max - min) / median of the batch times")
    print(f"{'model':<18}{'baseline img/s':>16}{'ncrobust img/s':>16}{'ratio':>9}{'spread':>9}")
    for name in plan.models:
        r = measure(name, plan)
        print(
            f"{name:<18}{r.baseline_rate:>16.1f}{r.fast_rate:>16.1f}{r.ratio:>8.2f}x"
            f"{r.spread:>8.0%}",
            flush=True,
        )
    return 0
