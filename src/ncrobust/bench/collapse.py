"""``ncrobust bench collapse``: time the exact streaming NC metrics against the released approach.

For each size it times ``CollapseAccumulator`` (both passes and ``compute``, with W, b and the
logits a training run would hand over, features already in memory as float32 and streamed in
batches) and, in the same run, a baseline with the structure of the released code's
``neural_collapse()``: batches of 128, a Python loop over classes per batch, a per-sample Python
loop for the nearest class centre, Σ_W summed from batched p×p outer products and
``scipy.linalg.pinv`` of Σ_B on the CPU. The baseline leaves out the parts that are not NC
metrics (loss, accuracy, per-pair angle lists) and counts with tensor sums, so it errs on the
fast side. It is slow, so it runs on a subsample; its two passes are extrapolated linearly in N
and its N-independent finalisation is added once. It is skipped when its per-batch p×p outer
products would not fit (p = 65,536 needs 2 TiB per batch and a 16 GiB float32 Σ_W).
The values are compared on the baseline's subsample with the baseline in float32 (as released)
and in float64.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from ncrobust.collapse import CollapseAccumulator
from ncrobust.errors import UsageError
from ncrobust.runtime import resolve_device

BASELINE_BATCH = 128
COMPARED = (
    "nc1",
    "nc2_equinorm",
    "nc2_equiangular",
    "nc2_equinorm_w",
    "nc2_equiangular_w",
    "nc3_frobenius",
    "nc4",
)
AGREEMENT = 1e-6  # max relative difference allowed against the float64 baseline
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust bench collapse``."""
    parser.add_argument("--samples", type=int, default=50_000, help="N of the p=512 cases")
    parser.add_argument("--features", type=int, default=512, help="p of the main cases")
    parser.add_argument("--classes", default="10,100", help="comma-separated C of the main cases")
    parser.add_argument("--batch-size", type=int, default=10_000, help="streamed batch size")
    parser.add_argument(
        "--wide-samples", type=int, default=10_000, help="N of the wide case (0: skip)"
    )
    parser.add_argument("--wide-features", type=int, default=65_536, help="p of the wide case")
    parser.add_argument("--wide-classes", type=int, default=10, help="C of the wide case")
    parser.add_argument(
        "--wide-batch-size",
        type=int,
        default=1_000,
        help="batch size of the wide-feature case (default: 1000)",
    )
    parser.add_argument(
        "--baseline-samples",
        type=int,
        default=2_000,
        help="subsample the baseline runs on (its time is extrapolated to N)",
    )
    parser.add_argument(
        "--baseline-max-features",
        type=int,
        default=1_024,
        help="skip the baseline above this p (its 128×p×p outer products per batch)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of torch and of the baseline's BLAS (default: the libraries' choice)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours per case")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (less disturbed by other jobs on a "
        "shared machine; with several threads it adds up their times)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data (default: 0)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")


@dataclass
class Case:
    """One benchmark size."""

    samples: int
    features: int
    classes: int
    batch: int

    @property
    def label(self) -> str:
        return f"N={self.samples:,} p={self.features:,} C={self.classes}"


@dataclass
class Data:
    """Synthetic trained-network-like features, labels, last layer and its logits."""

    features: Tensor
    labels: Tensor
    weight: Tensor
    bias: Tensor
    logits: Tensor


def run(args: argparse.Namespace) -> int:
    """Run every case, print timings, memory, speed ratio and value agreement; 1 on disagreement."""
    cases = _cases(args)
    device = resolve_device(args.device)
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be positive (got {args.threads})")
    previous_threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        with _blas_threads(args.threads):
            return _run_cases(cases, device, args)
    finally:
        torch.set_num_threads(previous_threads)


def _blas_threads(threads: int | None) -> contextlib.AbstractContextManager[object]:
    """Limit the BLAS behind NumPy/SciPy (the baseline's pinv) to ``threads`` as well."""
    if threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


def _run_cases(cases: list[Case], device: torch.device, args: argparse.Namespace) -> int:
    repeats = 1 if args.quick else args.repeats
    baseline_n = min(args.baseline_samples, 300) if args.quick else args.baseline_samples
    print(
        f"ncrobust bench collapse on {_device_name(device)}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; {repeats} timed run(s) of ours per case, {args.clock} clock"
    )
    clock = CLOCKS[args.clock]
    summary: list[str] = []
    ok = True
    for case in cases:
        print(f"\n{case.label}: float32 features in memory, streamed in batches of {case.batch:,}")
        data = _make_data(case, device, args.seed)
        with _peak_memory(device) as peak:  # also the warm-up run
            ours_values = _ours(data, case.classes, case.batch)
        times = [
            _time(partial(_ours, data, case.classes, case.batch), clock) for _ in range(repeats)
        ]
        ours_time = statistics.median(times)
        print(
            f"  ncrobust: {ours_time:.3f} s (median of {repeats}, min {min(times):.3f} s), "
            f"peak extra memory {peak():.0f} MiB; nc1 = {ours_values['nc1']:.6g}"
        )
        print(
            f"  ncrobust's time includes {len(ours_values)} measures: {', '.join(ours_values)} "
            "(and the per-class sums behind per_class(): σ_c², NC4, NCC)"
        )
        line = f"{case.label:<28} ours {ours_time:8.3f} s"
        if case.features > args.baseline_max_features:
            gib = BASELINE_BATCH * case.features**2 * 4 / 2**30
            print(
                f"  baseline skipped: p = {case.features:,} > --baseline-max-features; its "
                f"per-batch outer products would need {gib:,.0f} GiB and Σ_W alone "
                f"{case.features**2 * 4 / 2**30:,.1f} GiB in float32 "
                f"({case.features**2 * 8 / 2**30:,.1f} GiB as a float64 p×p matrix)"
            )
            summary.append(f"{line}   baseline skipped (p×p does not fit)")
            continue
        n_sub = min(baseline_n, case.samples)
        sub = _subsample(data, n_sub)
        with _peak_memory(device) as base_peak:
            passes, finalise, base32 = _baseline(sub, case.classes, torch.float32, clock)
        _, _, base64 = _baseline(sub, case.classes, torch.float64, clock)
        extrapolated = passes * case.samples / n_sub + finalise
        ratio = extrapolated / ours_time
        ours_sub = _ours(sub, case.classes, case.batch)
        diff32, diff64 = (
            _max_relative_difference(ours_sub, base32),
            _max_relative_difference(ours_sub, base64),
        )
        print(
            f"  baseline (released structure, float32) on {n_sub:,} samples: passes "
            f"{passes:.3f} s + finalise {finalise:.3f} s, peak extra memory "
            f"{base_peak():.0f} MiB; extrapolated linearly in N to {case.samples:,} samples: "
            f"{extrapolated:.2f} s"
        )
        print(f"  the baseline computes {len(COMPARED)} of them: {', '.join(COMPARED)}")
        print(f"  speed ratio (extrapolated baseline / ours): {ratio:.1f}x")
        print(
            f"  values on the same {n_sub:,} samples: max relative difference {diff64:.1e} vs "
            f"the baseline in float64, {diff32:.1e} vs float32 (as released)"
        )
        if diff64 > AGREEMENT:
            ok = False
            print(f"  MISMATCH: values differ by more than {AGREEMENT:g} from the float64 baseline")
        summary.append(
            f"{line}   baseline ~{extrapolated:9.2f} s (extrapolated from {n_sub:,})   "
            f"ratio {ratio:7.1f}x   max rel diff {diff64:.1e}"
        )
    print("\nsummary")
    for line in summary:
        print(f"  {line}")
    return 0 if ok else 1


# -- cases and data ------------------------------------------------------------------------


def _cases(args: argparse.Namespace) -> list[Case]:
    """The sizes to run, validated before anything is allocated."""
    if args.quick:
        return [Case(1_000, 32, 10, 256), Case(256, 4_096, 10, 64)]
    try:
        classes = [int(c) for c in str(args.classes).split(",") if c.strip()]
    except ValueError as exc:
        raise UsageError(
            f"--classes must be comma-separated integers, got {args.classes!r}"
        ) from exc
    cases = [Case(args.samples, args.features, c, args.batch_size) for c in classes]
    if args.wide_samples:
        cases.append(
            Case(args.wide_samples, args.wide_features, args.wide_classes, args.wide_batch_size)
        )
    for case in cases:
        if case.classes < 2:
            raise UsageError(f"every number of classes must be at least 2 (got {case.classes})")
        if case.samples < case.classes:
            raise UsageError(f"{case.label}: need at least one sample per class")
        if case.features < 1 or case.batch < 1:
            raise UsageError(f"{case.label}: features and batch size must be positive")
    if args.repeats < 1 or args.baseline_samples < 1:
        raise UsageError("--repeats and --baseline-samples must be positive")
    return cases


def _make_data(case: Case, device: torch.device, seed: int) -> Data:
    """Clustered non-negative features (as after a ReLU) with a nearly self-dual last layer."""
    g = torch.Generator(device=device).manual_seed(seed)
    c, p, n = case.classes, case.features, case.samples
    centres = torch.randn(c, p, generator=g, device=device) + 1.0
    labels = torch.arange(n, device=device) % c  # every run of C consecutive rows has each class
    features = torch.empty(n, p, device=device)
    for start in range(0, n, case.batch):  # chunked so the wide case needs no second N×p buffer
        rows = slice(start, min(start + case.batch, n))
        noise = torch.randn(rows.stop - start, p, generator=g, device=device)
        features[rows] = (centres[labels[rows]] + 0.8 * noise).relu_()
    weight = centres - centres.mean(0) + 0.3 * torch.randn(c, p, generator=g, device=device)
    bias = 0.1 * torch.randn(c, generator=g, device=device)
    logits = torch.empty(n, c, device=device)
    for start in range(0, n, case.batch):
        logits[start : start + case.batch] = features[start : start + case.batch] @ weight.T + bias
    return Data(features, labels, weight, bias, logits)


def _subsample(data: Data, n: int) -> Data:
    return Data(data.features[:n], data.labels[:n], data.weight, data.bias, data.logits[:n])


# -- ours ----------------------------------------------------------------------------------


def _ours(data: Data, classes: int, batch: int) -> dict[str, float]:
    """Both passes and ``compute`` as a training run's measurement would call them."""
    acc = CollapseAccumulator(
        classes, weight=data.weight, bias=data.bias, device=data.features.device
    )
    for _ in range(2):
        for start in range(0, data.features.shape[0], batch):
            rows = slice(start, start + batch)
            acc.update(data.features[rows], data.labels[rows], data.logits[rows])
        if acc.current_pass == 1:
            acc.next_pass()
    return acc.compute()  # returns floats: the device has finished


# -- the baseline --------------------------------------------------------------------------


def _baseline(
    data: Data, classes: int, dtype: torch.dtype, clock: Callable[[], float]
) -> tuple[float, float, dict[str, float]]:
    """The released ``neural_collapse()`` structure: seconds of the two passes, seconds of the
    finalisation, and the values (NC3 in its Frobenius form, as released)."""
    device = data.features.device
    counts = [0] * classes
    sums: list[Tensor] = [torch.zeros(data.features.shape[1], dtype=dtype, device=device)] * classes
    sigma_w: Tensor | int = 0
    agree = 0
    _sync(device)
    start_time = clock()
    means: Tensor | None = None
    for phase in ("mean", "cov"):
        for h, target, output in _baseline_batches(data, dtype):
            for c in range(classes):
                idxs = (target == c).nonzero(as_tuple=True)[0]
                if len(idxs) == 0:
                    continue
                h_c = h[idxs, :]
                if phase == "mean":
                    sums[c] = sums[c] + h_c.sum(dim=0)
                    counts[c] += h_c.shape[0]
                    continue
                assert means is not None
                z = h_c - means[:, c].unsqueeze(0)
                sigma_w = sigma_w + torch.matmul(z.unsqueeze(-1), z.unsqueeze(1)).sum(dim=0)
                prediction = output[idxs, :].argmax(dim=1)
                distances = torch.stack(
                    [torch.norm(h_c[i, :] - means.T, dim=1) for i in range(h_c.shape[0])]
                )
                agree += int((distances.argmin(dim=1) == prediction).sum().item())
        if phase == "mean":
            means = torch.stack([sums[c] / counts[c] for c in range(classes)]).T  # p×C
    assert means is not None and isinstance(sigma_w, Tensor)
    n = sum(counts)
    sigma_w = sigma_w / n
    _sync(device)
    passes = clock() - start_time

    def finalise() -> dict[str, float]:
        weight = data.weight.to(dtype)
        global_mean = sum(means[:, c : c + 1] * counts[c] for c in range(classes)) / n
        centred = means - global_mean
        sigma_b = centred @ centred.T / classes
        inverse = scipy.linalg.pinv(sigma_b.cpu().numpy())
        nc1 = float(np.trace(sigma_w.cpu().numpy() @ inverse))
        m_norms, w_norms = centred.norm(dim=0), weight.T.norm(dim=0)
        return {
            "nc1": nc1,
            "nc2_equinorm": (m_norms.std() / m_norms.mean()).item(),
            "nc2_equiangular": _coherence(centred / m_norms, classes),
            "nc2_equinorm_w": (w_norms.std() / w_norms.mean()).item(),
            "nc2_equiangular_w": _coherence(weight.T / w_norms, classes),
            "nc3_frobenius": (
                (weight.T / weight.norm() - centred / centred.norm()).norm() ** 2
            ).item(),
            "nc4": 1 - agree / n,
        }

    # the N-independent part is added once to the extrapolation: take its best of 3
    finalise_time = min(_time(finalise, clock) for _ in range(3))
    return passes, finalise_time, finalise()


def _baseline_batches(data: Data, dtype: torch.dtype) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    for start in range(0, data.features.shape[0], BASELINE_BATCH):
        rows = slice(start, start + BASELINE_BATCH)
        yield data.features[rows].to(dtype), data.labels[rows], data.logits[rows]


def _coherence(unit_columns: Tensor, classes: int) -> float:
    """Mean |cos + 1/(C−1)| over off-diagonal pairs of unit columns."""
    gram = unit_columns.T @ unit_columns + 1.0 / (classes - 1)
    gram = gram - torch.diag(torch.diag(gram))
    return gram.abs().sum().item() / (classes * (classes - 1))


def _max_relative_difference(ours: dict[str, float], baseline: dict[str, float]) -> float:
    worst = 0.0
    for key in COMPARED:
        a, b = ours[key], baseline[key]
        scale = max(abs(a), abs(b))
        if scale > 0:
            worst = max(worst, abs(a - b) / scale)
    return worst


# -- timing and memory ---------------------------------------------------------------------


def _time(fn: Callable[[], object], clock: Callable[[], float]) -> float:
    start = clock()
    fn()
    return clock() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def _peak_memory(device: torch.device) -> Iterator[Callable[[], float]]:
    """Yields a function giving the peak memory (MiB) above the level at entry: CUDA allocator
    statistics on a GPU, resident set size sampled every millisecond on the CPU (Linux)."""
    result = {"peak": 0.0}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield lambda: result["peak"]
        torch.cuda.synchronize(device)
        result["peak"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    if not os.path.exists("/proc/self/statm"):
        yield lambda: float("nan")
        return
    base, peak, stop = _rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.001):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lambda: result["peak"]
    finally:
        stop.set()
        thread.join()
        result["peak"] = max(0, max(peak[0], _rss_bytes()) - base) / 2**20


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({os.cpu_count()} cores)"
