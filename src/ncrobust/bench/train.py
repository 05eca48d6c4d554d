"""``ncrobust bench train``: training and measurement throughput against the released loop.

For each paper model and each mode (ST, AT, TRADES) it times training steps of ours (data
resident on the device, input-only attack gradients, bf16 autocast and channels_last on
CUDA) and of a baseline that mimics the released code (a one-worker DataLoader, fp32,
normalisation outside the model, ``loss.backward()`` in the attack filling every parameter's
gradient, ``.item()`` after every batch), on the same synthetic CIFAR-shaped data in the same
process, and reports images/s and their ratio. It also times one measurement pass (the AT
default probes) against the released ``neural_collapse()`` approach, and the share of time
measurement would take when measuring every 5 epochs of a full-size AT run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ncrobust.atomic import atomic_write_text
from ncrobust.config import TrainConfig
from ncrobust.data import Split, batches, synthetic_dataset
from ncrobust.errors import UsageError
from ncrobust.models import TappedClassifier, available_models, create_model
from ncrobust.probing.engine import PerturbedSet, Prober, ProbeSpec
from ncrobust.runtime import Compiled, autocast, compile_wanted, make_sgd, resolve_device
from ncrobust.training.objectives import objective_step

CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000
MEASURE_EVERY = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust bench train``."""
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["vgg11_bn", "preact_resnet18"],
        metavar="NAME",
        help="registry names (default: the paper's)",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["st", "at", "trades"],
        choices=["st", "at", "trades"],
        help="training modes to time (default: st at trades)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=128, help="training batch size (default: 128)"
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=None,
        help="timed batches per mode (default: 3 on CPU, a full epoch on CUDA)",
    )
    parser.add_argument(
        "--measure-samples",
        type=int,
        default=None,
        help="train-split size of the measurement pass (default: 512 on a CPU, 10000 on CUDA)",
    )
    parser.add_argument("--steps", type=int, default=10, help="PGD steps (default: 10)")
    add_compile_flag(parser)
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes (smoke test)")
    parser.add_argument(
        "--write-rates",
        metavar="JSON",
        help="also write our images/s per model and mode to a file (`sweep --dry-run --rates`)",
    )


@dataclass
class Timing:
    """Images per second of ours and of the baseline."""

    ours: float
    baseline: float

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print one line per measurement."""
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    models = ["small_cnn"] if args.quick else list(args.models)
    modes = list(args.modes)
    unknown = [m for m in models if m not in available_models()]
    if unknown:
        raise UsageError(f"unknown model(s) {unknown} (available: {available_models()})")
    batch = 16 if args.quick else args.batch_size
    timed = args.batches or (2 if args.quick else (CIFAR_TRAIN // batch if cuda else 3))
    measure_n = args.measure_samples or (64 if args.quick else (10_000 if cuda else 512))
    steps = 2 if args.quick else args.steps
    print(
        f"device: {device} ({_device_name(device)}); batch {batch}, {timed} timed batches, "
        f"PGD-{steps}; ours: {'bf16 autocast + channels_last' if cuda else 'fp32'}"
        f"{' + torch.compile' if compile_wanted(compile_setting(args), device) else ''}, "
        f"baseline: fp32, DataLoader(num_workers=1), full backward in the attack"
    )
    train_rates: dict[str, dict[str, float]] = {}  # model -> mode -> our images/s
    measure_rates: dict[str, float] = {}  # model -> our measurement images/s
    for name in models:
        n = max(timed * batch, measure_n)
        data = synthetic_dataset(
            10, (3, 32, 32), n_per_class=-(-n // 10), seed=0, test_per_class=max(1, measure_n // 40)
        )
        rates: dict[str, Timing] = {}
        for mode in modes:
            config = TrainConfig(
                model=name,
                mode=mode,
                eps=8 / 255,
                alpha=2 / 255,
                steps=steps,
                batch_size=batch,
                precision="bf16" if cuda else "fp32",
                compile=compile_setting(args),
            )
            ours = _time_ours(name, config, data.train, timed, device)
            base = _time_baseline(name, config, data.train, timed, device)
            rates[mode] = Timing(ours, base)
            print(
                f"{name:16s} {mode:6s} train: ours {ours:9.1f} img/s  released-style "
                f"{base:9.1f} img/s  ratio {rates[mode].ratio:6.2f}x"
            )
        ours_m, base_m = _time_measurement(name, data.train, data.test, measure_n, steps, device)
        train_rates[name] = {mode: timing.ours for mode, timing in rates.items()}
        measure_rates[name] = ours_m
        print(
            f"{name:16s} measure      : ours {ours_m:9.1f} img/s  released-style "
            f"{base_m:9.1f} img/s  ratio {ours_m / base_m:6.2f}x  ({measure_n} train images)"
        )
        if "at" in rates:
            for label, at_rate, m_rate in (
                ("ours", rates["at"].ours, ours_m),
                ("released-style", rates["at"].baseline, base_m),
            ):
                epoch_s = CIFAR_TRAIN / at_rate
                measure_s = (CIFAR_TRAIN + CIFAR_TEST) / m_rate
                share = measure_s / (MEASURE_EVERY * epoch_s + measure_s)
                print(
                    f"{name:16s} {label:15s} full-size AT epoch {epoch_s:9.1f}s, measurement "
                    f"{measure_s:9.1f}s, share when measuring every {MEASURE_EVERY} epochs "
                    f"{100 * share:5.1f}%"
                )
    if args.write_rates:
        written = {
            "device": f"{device} ({_device_name(device)})",
            "image_size": 32,  # the synthetic CIFAR-shaped data the rates were taken on
            "steps": steps,
            "train": train_rates,
            "measure": measure_rates,
        }
        atomic_write_text(Path(args.write_rates), json.dumps(written, indent=2) + "\n")
        print(f"rates: {args.write_rates}")
    return 0


def add_compile_flag(parser: argparse.ArgumentParser) -> None:
    """``--compile``/``--no-compile`` of the benchmarks that time our training step."""
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile our step (default: on for CUDA, off on the CPU)",
    )


def compile_setting(args: argparse.Namespace) -> str:
    """``--compile``/``--no-compile``/neither as the config's on/off/auto."""
    return "auto" if args.compile is None else ("on" if args.compile else "off")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{torch.get_num_threads()} CPU threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(
    device: torch.device, body: Callable[[], int], ready: Callable[[], None] | None = None
) -> float:
    """Images per second of ``body`` (which returns how many images it processed); ``ready``
    is called first (bench pack starts its concurrent runs' clocks together)."""
    if ready is not None:
        ready()
    _sync(device)
    start = time.perf_counter()
    images = body()
    _sync(device)
    return images / (time.perf_counter() - start)


# -- ours ----------------------------------------------------------------------------------


def _model(name: str, device: torch.device, normalised: bool = True) -> TappedClassifier:
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    model = create_model(
        name,
        num_classes=10,
        in_channels=3,
        image_size=32,
        mean=mean if normalised else None,
        std=std if normalised else None,
    )
    return model.to(device)


def _time_ours(
    name: str,
    config: TrainConfig,
    split: Split,
    timed: int,
    device: torch.device,
    ready: Callable[[], None] | None = None,
) -> float:
    """Our training steps' images/s; ``ready`` is called between warm-up and timing."""
    model = _model(name, device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_sgd(model.parameters(), device, lr=0.01, momentum=0.9, weight_decay=5e-4)
    step = Compiled(model) if compile_wanted(config.compile, device) else model
    split = split.to(device)
    generator = torch.Generator(device=device)
    generator.manual_seed(0)
    model.train()

    def steps(count: int) -> int:
        done = 0
        shuffle = torch.Generator().manual_seed(0)
        for x, y in batches(
            split, config.batch_size, shuffle=True, generator=shuffle, drop_last=True
        ):
            if done == count:
                break
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, config.precision):
                out = objective_step(step, x, y, config, generator, perturb=False)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            done += 1
        return done * config.batch_size

    steps(2)  # warm-up (allocator, cuDNN autotuning, compilation of train and eval graphs)
    return _timed(device, lambda: steps(timed), ready)


def _time_measurement(
    name: str, train: Split, test: Split, n: int, steps: int, device: torch.device
) -> tuple[float, float]:
    """Images/s of the AT default probes, ours vs the released neural_collapse() approach."""
    model = _model(name, device).eval()
    train = Split(train.images[:n], train.labels[:n]).to(device)
    test = test.to(device)
    x_adv = train.images.float().div(255).clamp(0, 1)  # stands in for the epoch's perturbed inputs
    adv = PerturbedSet(x_adv, train.labels)
    spec = ProbeSpec(
        plan=[
            ("train", "clean"),
            ("train", "train_adv"),
            ("test", "clean"),
            ("test", "pgd"),
            ("train", "gaussian"),
            ("test", "gaussian"),
        ],
        layers=["penultimate"],
        norm="linf",
        eps=8 / 255,
        alpha=2 / 255,
        steps=steps,
        batch_size=1024,
        precision="bf16" if device.type == "cuda" else "fp32",
    )
    prober = Prober.for_classifier(model, spec, 10, device)
    images = 3 * len(train) + 3 * len(test)  # train: clean, train_adv, gaussian; test likewise
    prober.run({"train": train, "test": test}, 0, adv)  # warm-up
    ours = _timed(device, lambda: (prober.run({"train": train, "test": test}, 0, adv), images)[1])
    base = _timed(device, lambda: _released_measurement(model, train, test, adv, steps))
    return ours, base


# -- the released code's approach, for comparison --------------------------------------------


def _normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor((0.49, 0.48, 0.45), device=x.device).view(3, 1, 1)
    std = torch.tensor((0.25, 0.24, 0.26), device=x.device).view(3, 1, 1)
    return (x - mean) / std


def _released_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    prep: Callable[[torch.Tensor], torch.Tensor] = _normalize,
) -> torch.Tensor:
    """PGD as the released attack_pgd: delta.requires_grad, loss.backward() fills param grads."""
    delta = torch.zeros_like(x).uniform_(-eps, eps)
    delta = torch.max(torch.min(delta, 1 - x), 0 - x)
    delta.requires_grad = True
    for _ in range(steps):
        loss = F.cross_entropy(model(prep(x + delta)), y)
        loss.backward()
        assert delta.grad is not None
        grad = delta.grad.detach()
        d = torch.clamp(delta + alpha * torch.sign(grad), min=-eps, max=eps)
        d = torch.max(torch.min(d, 1 - x), 0 - x)
        delta.data = d
        delta.grad.zero_()
    return delta.detach()


def _time_baseline(
    name: str,
    config: TrainConfig,
    split: Split,
    timed: int,
    device: torch.device,
    ready: Callable[[], None] | None = None,
) -> float:
    model = _model(name, device, normalised=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = split.images[: timed * config.batch_size + config.batch_size].float().div(255)
    labels = split.labels[: len(images)]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels),
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=1,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )
    kl = nn.KLDivLoss(reduction="sum")
    model.train()
    # one epoch's iterator, started before timing: the released loop pays the worker start-up
    # once per epoch of hundreds of batches, so a few timed batches must not include it
    batches_left = iter(loader)

    def steps(count: int) -> int:
        done, total_loss = 0, 0.0
        for x, y in batches_left:
            x, y = x.to(device), y.to(device)
            if config.mode == "st":
                loss = F.cross_entropy(model(_normalize(x)), y)
            elif config.mode == "at":
                delta = _released_attack(model, x, y, config.eps, config.alpha, config.steps)
                loss = F.cross_entropy(model(_normalize(torch.clamp(x + delta, 0, 1))), y)
                model(_normalize(x))  # the released loop's clean forward for its statistics
            else:
                model.eval()
                x_adv = x + 0.001 * torch.randn_like(x)
                for _ in range(config.steps):
                    x_adv.requires_grad_()
                    with torch.enable_grad():
                        loss_kl = kl(
                            F.log_softmax(model(_normalize(x_adv)), 1),
                            F.softmax(model(_normalize(x)), 1),
                        )
                    grad = torch.autograd.grad(loss_kl, [x_adv])[0]
                    x_adv = x_adv.detach() + config.alpha * torch.sign(grad.detach())
                    x_adv = torch.min(torch.max(x_adv, x - config.eps), x + config.eps).clamp(0, 1)
                model.train()
                logits = model(_normalize(x))
                loss = (
                    F.cross_entropy(logits, y)
                    + 6.0
                    * kl(
                        F.log_softmax(model(_normalize(x_adv)), 1),
                        F.softmax(model(_normalize(x)), 1),
                    )
                    / x.shape[0]
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item()  # the released loop synchronises after every batch
            done += 1
            if done == count:
                break
        return done * config.batch_size

    steps(1)
    return _timed(device, lambda: steps(timed), ready)


def _released_nc(
    model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]], num_classes: int
) -> tuple[float, int]:
    """The released neural_collapse(): per-class loops, per-sample NCC, p×p Σ_W, scipy pinv."""
    import numpy as np
    import scipy.linalg

    counts = [0] * num_classes
    sums: list[torch.Tensor] = []
    sigma_w = torch.zeros(())
    match = 0
    means = torch.zeros(())
    with torch.no_grad():
        for phase in ("mean", "cov"):
            for x, y in data:
                output, taps = model(x, taps=["penultimate"])
                h = taps["penultimate"]
                if not sums:
                    sums = [torch.zeros_like(h[0]) for _ in range(num_classes)]
                for c in range(num_classes):
                    idx = (y == c).nonzero(as_tuple=True)[0]
                    if len(idx) == 0:
                        continue
                    h_c = h[idx]
                    if phase == "mean":
                        sums[c] += h_c.sum(0)
                        counts[c] += h_c.shape[0]
                        continue
                    z = h_c - means[:, c]
                    sigma_w = sigma_w + (z.unsqueeze(-1) @ z.unsqueeze(1)).sum(0)
                    net = output[idx].argmax(1)
                    scores = torch.stack(
                        [torch.norm(h_c[i] - means.T, dim=1) for i in range(h_c.shape[0])]
                    )
                    match += int((scores.argmin(1) == net).sum().item())
            if phase == "mean":
                means = torch.stack([s / max(k, 1) for s, k in zip(sums, counts, strict=True)]).T
        weights = torch.tensor(counts, dtype=means.dtype, device=means.device)
        mu_g = means @ weights / sum(counts)
        centred = means - mu_g[:, None]
        sigma_b = (centred @ centred.T / num_classes).cpu().numpy()
        nc1 = float(np.trace((sigma_w / sum(counts)).cpu().numpy() @ scipy.linalg.pinv(sigma_b)))
    return nc1, match


def _released_measurement(
    model: nn.Module, train: Split, test: Split, adv: PerturbedSet, steps: int
) -> int:
    """The same six views as ours: lists of 128-batches, PGD as attack_pgd, neural_collapse()."""

    def listed(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(x[i : i + 128], y[i : i + 128]) for i in range(0, len(y), 128)]

    def identity(z: torch.Tensor) -> torch.Tensor:
        return z  # our models normalise inside; where it happens does not change the cost

    clean, test_x = train.images.float().div(255), test.images.float().div(255)
    attacked = torch.cat(
        [
            (x + _released_attack(model, x, y, 8 / 255, 2 / 255, steps, prep=identity)).clamp(0, 1)
            for x, y in listed(test_x, test.labels)
        ]
    )
    views = [
        (clean, train.labels),
        (adv.inputs, adv.labels),
        ((clean + 8 / 255 * torch.randn_like(clean)).clamp(0, 1), train.labels),
        (test_x, test.labels),
        (attacked, test.labels),
        ((test_x + 8 / 255 * torch.randn_like(test_x)).clamp(0, 1), test.labels),
    ]
    for x, y in views:
        _released_nc(model, listed(x, y), 10)
    return sum(len(y) for _, y in views)
