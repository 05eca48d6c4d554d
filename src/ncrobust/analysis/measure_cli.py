"""``ncrobust measure``: measure a run's checkpoints (one, several or all) after training.

The released code's eval.py re-measured 400 per-epoch checkpoints; here the kept checkpoints
of a run directory (any number) are measured with the run's own config and the same probes
as training, so a checkpoint's numbers equal the training-time measurement of its epoch.
``torchrun -m ncrobust measure`` shares the work among the processes and gives the numbers of
one process; rank 0 writes. Results go to ``measurements.parquet`` /
``measurement_stats.parquet`` in the run directory
(rows of the same epoch, split, view, layer and metric are replaced), or, with ``--eps``, to
``eps_study.parquet`` (one block per eps, step scaled linearly: the paper's Figure 16).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd
import torch

from ncrobust.config import (
    SPLITS,
    TrainConfig,
    check_device,
    check_radius,
    parse_pixels,
    parse_view,
    read_config,
    scaled_step,
)
from ncrobust.data import load_dataset
from ncrobust.errors import UsageError
from ncrobust.runlock import RunLock
from ncrobust.runs import METRIC_COLUMNS, RunDirectory, atomic_write_parquet, out_problem
from ncrobust.training import distributed
from ncrobust.training.checkpoint import LAST, load_checkpoint, restore
from ncrobust.training.trainer import build_model, run_identity


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust measure``."""
    parser.add_argument("run", help="run directory")
    parser.add_argument(
        "--epochs",
        default="last",
        help="kept checkpoints to measure: last, all, or comma-separated epochs",
    )
    parser.add_argument("--checkpoint", help="measure this checkpoint file instead")
    parser.add_argument(
        "--layers",
        default=None,
        help="tap names or all (default: all; with --eps the penultimate layer, as Figure 16)",
    )
    parser.add_argument("--views", default="clean,pgd,gaussian,targeted")
    parser.add_argument("--splits", default="train,test")
    parser.add_argument("--pool", type=int, help="average-pool conv features to POOL×POOL")
    parser.add_argument("--eps", help="small-eps study: comma-separated radii (k/255 accepted)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default=None, help="default: the run's device")


def checkpoints(run: RunDirectory, which: str) -> list[Path]:
    """The checkpoint files named by ``which`` (last, all, or a list of epochs)."""
    folder = run.checkpoint_dir
    kept = {
        int(m.group(1)): p
        for p in folder.glob("epoch-*.safetensors")
        if (m := re.fullmatch(r"epoch-(\d+)\.safetensors", p.name))
    }
    if which == "all":
        if not kept:
            raise UsageError(f"{folder} holds no kept checkpoints")
        return [kept[e] for e in sorted(kept)]
    if which == "last":
        if not (folder / LAST).is_file():
            raise UsageError(f"{folder} holds no checkpoint")
        return [folder / LAST]
    try:
        wanted = [int(e) for e in which.split(",") if e.strip()]
    except ValueError as exc:
        raise UsageError(f"--epochs expects last, all or integers, got {which!r}") from exc
    missing = [e for e in wanted if e not in kept]
    if missing:
        raise UsageError(f"no kept checkpoint for epoch(s) {missing} (kept: {sorted(kept)})")
    return [kept[e] for e in wanted]


def run(args: argparse.Namespace) -> int:
    """Validate the run, its checkpoints and the options, then measure and write the tables."""
    run_dir = RunDirectory(Path(args.run))
    if not run_dir.exists():
        raise UsageError(f"{args.run} is not a run directory (no config.yaml)")
    config = read_config(run_dir.config_path)  # validated as a whole
    views = [v for v in args.views.split(",") if v]
    for view in views:
        if parse_view(view, config.norm).view == "train_adv":
            raise UsageError("train_adv is recorded during training only; it cannot be re-measured")
    splits = [s for s in args.splits.split(",") if s]
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise UsageError(f"--splits: expected train and/or test, got {args.splits!r}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.pool is not None and args.pool < 1:
        raise UsageError(f"--pool must be >= 1, got {args.pool}")
    eps_list = [parse_pixels(e, "eps") for e in (args.eps or "").split(",") if e.strip()]
    for eps in eps_list:
        if not eps > 0:
            raise UsageError("--eps values must be > 0")
        check_radius(config.norm, eps, config.dataset, "eps")
    if args.device is not None:
        check_device(args.device)
    lock = RunLock(run_dir.root)  # one writer per run directory (a training run included)
    if distributed.launch_context().is_main:  # under torchrun, rank 0 writes
        try:
            lock.acquire()
        except OSError as exc:
            raise UsageError(out_problem(run_dir.root, exc)) from None
    joined = distributed.current().distributed
    finished = False
    try:
        context, device = distributed.setup(args.device or config.device)
        status = _measure(args, run_dir, config, views, splits, eps_list, device, context.is_main)
        finished = True
        return status
    finally:
        lock.release()
        if not joined:
            distributed.shutdown(wait=finished)


def _measure(
    args: argparse.Namespace,
    run_dir: RunDirectory,
    config: TrainConfig,
    views: list[str],
    splits: list[str],
    eps_list: list[float],
    device: torch.device,
    main: bool,
) -> int:
    from ncrobust.analysis.measure import AttackSettings, measure_tables

    files = [Path(args.checkpoint)] if args.checkpoint else checkpoints(run_dir, args.epochs)
    loaded = [load_checkpoint(f) for f in files]  # every file is checked before any compute
    dataset = load_dataset(config.dataset, data_dir=config.data_dir)
    identity = run_identity(config, dataset)
    for checkpoint in loaded:
        checkpoint.check_identity(identity)
        checkpoint.check_epoch(config.epochs)
    model = build_model(config, dataset).to(device)
    chosen = args.layers if args.layers is not None else ("penultimate" if eps_list else "all")
    layers = [layer for layer in chosen.split(",") if layer]
    data = {name: dataset.split(name) for name in splits if name in ("train", "test")}
    if "train" not in data:
        data["train"] = dataset.train  # the reference means; its rows are dropped below
    settings = [
        (
            config.eps,
            AttackSettings(
                config.norm,
                config.eps,
                config.alpha,
                config.steps,
                config.gaussian_std,
                config.precision,
            ),
        )
    ]
    if eps_list:
        settings = [
            (
                e,
                AttackSettings(
                    config.norm,
                    e,
                    scaled_step(config.alpha, config.eps, e),
                    config.steps,
                    config.gaussian_std,
                    config.precision,
                ),
            )
            for e in eps_list
        ]
    frames, stat_frames, eps_frames = [], [], []
    for checkpoint in loaded:
        restore(checkpoint, model)
        for eps, attack in settings:
            metrics, stats = measure_tables(
                model,
                data,
                layers=layers,
                views=views if not eps_list else ["clean", "pgd"],
                attack=attack,
                batch_size=args.batch_size or config.measure_batch_size,
                pool=args.pool,
                device=device,
                epoch=checkpoint.epoch,
                seed=config.seed,
            )
            metrics = metrics[metrics.split.isin(splits)]
            stats = stats[stats.split.isin(splits)]
            if eps_list:
                eps_frames.append(metrics.assign(eps=eps))
            else:
                frames.append(metrics)
                stat_frames.append(stats)
            if main:
                at = f" at eps {eps:.5g}" if eps_list else ""
                print(f"measured epoch {checkpoint.epoch}{at}")
    if not main:
        return 0  # rank 0 writes
    keys = ["epoch", "split", "view", "layer", "metric"]
    if eps_list:
        _merge(run_dir.eps_study_path, pd.concat(eps_frames), ["eps", *keys])
    else:
        _merge(run_dir.measurements_path, pd.concat(frames), keys)
        _merge(
            run_dir.measurement_stats_path,
            pd.concat(stat_frames),
            ["epoch", "split", "view", "layer", "class", "statistic"],
        )
    return 0


def _merge(path: Path, new: pd.DataFrame, keys: list[str]) -> None:
    """Write ``new`` over the rows of ``path`` with the same keys (atomically)."""
    if path.exists():
        old = pd.read_parquet(path)
        new = pd.concat([old, new]).drop_duplicates(keys, keep="last")
    columns = [c for c in ("eps", *METRIC_COLUMNS, "class", "statistic") if c in new.columns]
    rest = [c for c in new.columns if c not in columns]
    atomic_write_parquet(new[columns + rest].reset_index(drop=True), path)
