"""``ncrobust bench pack``: aggregate training throughput of K concurrent runs on one device.

The paper's runs are small: one run at batch 128 leaves most of a GPU idle, so several runs
sharing it train more images per second in total. For each K (default 1, 2, 4, 8) it starts
K worker processes on the same device, each timing our training steps of one model and mode
(the ``bench train`` step); the workers warm up, then start their clocks together, and the
aggregate is all their images over the longest worker's time. It also times one run of the
released-style loop in the same call, reports each K's aggregate against it and against
K = 1, and names the best K (``sweep --runs-per-gpu K``). ``--write-rates FILE`` adds the
best K and its throughput factor to a ``bench train --write-rates`` file, for
``sweep --dry-run --rates``. On the CPU the workers share the cores (threads = cores / K).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from ncrobust.atomic import atomic_write_text
from ncrobust.bench.train import _time_baseline, _time_ours, add_compile_flag, compile_setting
from ncrobust.config import TrainConfig
from ncrobust.data import synthetic_dataset
from ncrobust.errors import UsageError
from ncrobust.models import available_models
from ncrobust.runtime import resolve_device

READY, GO = "ready", "go"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust bench pack``."""
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)"
    )
    parser.add_argument(
        "--model", default="preact_resnet18", help="registry name (default: preact_resnet18)"
    )
    parser.add_argument(
        "--mode", default="at", choices=["st", "at", "trades"], help="objective (default: at)"
    )
    parser.add_argument(
        "--counts", default="1,2,4,8", help="the K to measure, comma-separated (default: 1,2,4,8)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=128, help="training batch size (default: 128)"
    )
    parser.add_argument(
        "--batches", type=int, default=None, help="timed batches per run (default: by device)"
    )
    parser.add_argument(
        "--steps", type=int, default=10, help="PGD steps of AT/TRADES (default: 10)"
    )
    add_compile_flag(parser)
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes (smoke test)")
    parser.add_argument(
        "--write-rates",
        metavar="JSON",
        help="add the best K and its throughput factor to this bench train rates file",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one run


def parse_counts(text: str) -> list[int]:
    """``1,2,4,8`` as sorted distinct integers >= 1, refused with one message otherwise."""
    try:
        counts = sorted({int(item) for item in str(text).split(",") if item.strip()})
    except ValueError:
        raise UsageError(f"--counts expects integers like 1,2,4,8, got {text!r}") from None
    if not counts or counts[0] < 1:
        raise UsageError(f"--counts expects integers >= 1, got {text!r}")
    return counts


def _settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """What every worker of this call trains: model, mode, sizes, steps (checked)."""
    quick = args.quick
    model = "small_cnn" if quick else args.model
    if model not in available_models():
        raise UsageError(f"unknown model {model!r} (available: {available_models()})")
    batch = 16 if quick else args.batch_size
    if batch < 1 or (args.batches is not None and args.batches < 1) or args.steps < 1:
        raise UsageError("--batch-size, --batches and --steps must be >= 1")
    default_batches = 2 if quick else (100 if device.type == "cuda" else 3)
    return {
        "model": model,
        "mode": args.mode,
        "batch": batch,
        "batches": args.batches or default_batches,
        "steps": 2 if quick else args.steps,
        "compile": compile_setting(args),
        "device": str(device),
    }


def run(args: argparse.Namespace) -> int:
    """Measure each K's aggregate images/s and print the best K."""
    if args.worker is not None:
        return _worker(json.loads(args.worker))
    device = resolve_device(args.device)
    counts = parse_counts(args.counts)
    settings = _settings(args, device)
    if args.write_rates and not Path(args.write_rates).is_file():
        raise UsageError(f"--write-rates {args.write_rates}: write it with bench train first")
    if args.write_rates and 1 not in counts:
        raise UsageError("--write-rates needs K = 1 in --counts (the factor is against one run)")
    print(
        f"device: {device}; {settings['model']} {settings['mode']}, batch {settings['batch']}, "
        f"{settings['batches']} timed batches per run, PGD-{settings['steps']}, "
        f"K = {','.join(map(str, counts))} concurrent runs"
    )
    released = _released(settings)
    print(f"released-style loop, one run: {released:9.1f} img/s")
    aggregates: dict[int, float] = {}
    for k in counts:
        rates = _concurrent(settings, k)
        aggregates[k] = sum(images for images, _ in rates) / max(s for _, s in rates)
        versus = f"  {aggregates[k] / aggregates[1]:5.2f}x K=1" if 1 in aggregates else ""
        print(
            f"K={k}: aggregate {aggregates[k]:9.1f} img/s ({aggregates[k] / k:9.1f} per run)"
            f"{versus}  {aggregates[k] / released:5.2f}x the released-style run"
        )
    best = max(aggregates, key=lambda k: aggregates[k])
    factor = aggregates[best] / aggregates[1] if 1 in aggregates else None
    print(f"best K: {best} (sweep --runs-per-gpu {best})")
    if args.write_rates:
        path = Path(args.write_rates)
        data = json.loads(path.read_text())
        data["packing"] = {
            "runs_per_gpu": best,
            "throughput_factor": factor,
            "model": settings["model"],
            "mode": settings["mode"],
        }
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        print(f"packing written to {path}")
    return 0


def _released(settings: dict[str, Any]) -> float:
    """One run of the released-style loop's images/s, in this process."""
    config, data, device = _setup(settings)
    return _time_baseline(settings["model"], config, data, settings["batches"], device)


def _setup(settings: dict[str, Any]) -> tuple[TrainConfig, Any, torch.device]:
    device = torch.device(settings["device"])
    n = (settings["batches"] + 3) * settings["batch"]
    data = synthetic_dataset(10, (3, 32, 32), n_per_class=-(-n // 10), seed=0, test_per_class=1)
    config = TrainConfig(
        model=settings["model"],
        mode=settings["mode"],
        eps=8 / 255,
        alpha=2 / 255,
        steps=settings["steps"],
        batch_size=settings["batch"],
        precision="bf16" if device.type == "cuda" else "fp32",
        compile=settings["compile"],
    )
    return config, data.train, device


def _concurrent(settings: dict[str, Any], k: int) -> list[tuple[int, float]]:
    """(images, seconds) of each of ``k`` worker processes timed together."""
    env = dict(os.environ)
    if settings["device"] == "cpu":  # the workers share the cores
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // k))
    command = [sys.executable, "-m", "ncrobust", "bench", "pack", "--worker", json.dumps(settings)]
    workers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(k)
    ]
    try:
        for worker in workers:  # every worker has warmed up before any clock starts
            assert worker.stdout is not None
            line = worker.stdout.readline().strip()
            if line != READY:
                raise RuntimeError(f"bench pack worker failed before timing (said {line!r})")
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(GO + "\n")
            worker.stdin.flush()
        results = []
        for worker in workers:
            out, _ = worker.communicate()
            if worker.returncode != 0:
                raise RuntimeError(f"bench pack worker exited with status {worker.returncode}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    return [(int(r["images"]), float(r["seconds"])) for r in results]


def _worker(settings: dict[str, Any]) -> int:
    """One concurrent run: warm up, say ready, wait for go, time, print images and seconds."""
    if settings["device"] == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    config, data, device = _setup(settings)

    def ready() -> None:
        print(READY, flush=True)
        if sys.stdin.readline().strip() != GO:
            raise SystemExit(1)

    rate = _time_ours(settings["model"], config, data, settings["batches"], device, ready)
    images = settings["batches"] * settings["batch"]
    print(json.dumps({"images": images, "seconds": images / rate}), flush=True)
    return 0
