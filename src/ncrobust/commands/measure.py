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
from pathlib import Path

from ncrobust import distributed
from ncrobust.config import check_device, check_radius
from ncrobust.errors import UsageError
from ncrobust.runs.directory import RunDirectory, out_problem
from ncrobust.runs.lock import RunLock
from ncrobust.views import SPLITS, parse_pixels, parse_view


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
    parser.add_argument(
        "--views",
        default=None,
        help="view specs VIEW[@SPLIT][@eps=E], comma-separated (default: the run's own views, "
        "with their own radii, except train_adv, which exists only during training)",
    )
    parser.add_argument(
        "--splits", default=None, help="train and/or test, comma-separated (default: the run's)"
    )
    parser.add_argument("--pool", type=int, help="average-pool conv features to POOL×POOL")
    parser.add_argument("--eps", help="small-eps study: comma-separated radii (k/255 accepted)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="batch size of the measurement passes (default: the run's measure_batch_size)",
    )
    parser.add_argument(
        "--device", default=None, help="auto, cpu, cuda or cuda:N (default: the run's device)"
    )


def run(args: argparse.Namespace) -> int:
    """Validate the run, its checkpoints and the options, then measure and write the tables."""
    run_dir = RunDirectory(Path(args.run))
    config = run_dir.read_config()  # validated as a whole
    if args.views is None:  # the run's own view specs (own radii kept), less train_adv
        views = [v for v in config.views if parse_view(v, config.norm).view != "train_adv"]
    else:
        views = [v for v in args.views.split(",") if v]
    for view in views:
        if parse_view(view, config.norm).view == "train_adv":
            raise UsageError("train_adv is recorded during training only; it cannot be re-measured")
    splits = list(config.splits) if args.splits is None else args.splits.split(",")
    splits = [s for s in splits if s]
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
        from ncrobust.runs.checkpoint import kept_checkpoints
        from ncrobust.training.remeasure import measure_checkpoints

        files = [Path(args.checkpoint)] if args.checkpoint else None
        status = measure_checkpoints(
            run_dir,
            config,
            files or kept_checkpoints(run_dir.checkpoint_dir, args.epochs),
            views=views,
            splits=splits,
            eps_list=eps_list,
            layers=args.layers,
            pool=args.pool,
            batch_size=args.batch_size,
            device=device,
            main=context.is_main,
        )
        finished = True
        return status
    finally:
        lock.release()
        if not joined:
            distributed.shutdown(wait=finished)
