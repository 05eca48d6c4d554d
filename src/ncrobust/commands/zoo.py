"""``ncrobust zoo``: Neural Collapse across the public robust-model zoo (RobustBench).

Each selected model is loaded through the zoo's own loader from ``--model-dir`` (downloaded
there when missing and the machine is online), measured like a trained run into
``OUT/<name>/`` and, once all are measured, summarised across models (``zoo_report.md``; the
same "Model zoo" section appears in ``ncrobust report OUT``). Models run one after another, or
each as one job through ``--executor local|slurm`` (as ``ncrobust sweep`` runs its grid); a
finished model with the same settings is skipped, so an interrupted call resumes where it
stopped. A model whose checkpoint cannot be loaded is named
and left out (exit status 1); the others are measured and summarised.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ncrobust.errors import UsageError

if TYPE_CHECKING:
    from ncrobust.experiments.executors import ClusterOptions
    from ncrobust.zoo.catalog import ZooEntry
    from ncrobust.zoo.job import ZooOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust zoo``."""
    parser.add_argument(
        "--dataset", default="cifar10", help="cifar10, cifar100 or imagenet (default: cifar10)"
    )
    parser.add_argument("--threat", default="Linf", help="Linf or L2 (default: Linf)")
    parser.add_argument("--models", default="", help="comma-separated zoo names")
    parser.add_argument("--all", action="store_true", help="every model of the zoo's list")
    parser.add_argument("--top", type=int, default=0, help="the first K in the zoo's order")
    parser.add_argument(
        "--model-dir", default="models", help="the zoo's checkpoint directory (default: models)"
    )
    parser.add_argument(
        "--info",
        action="append",
        default=[],
        help="folder laid out <dataset>/<threat>/<name>.json with leaderboard entries "
        "(repeatable; --model-dir is always searched)",
    )
    parser.add_argument("--out", default=None, help="default: runs/zoo/<dataset>_<threat>")
    parser.add_argument(
        "--points", type=int, default=500, help="train and test points each (default: 500)"
    )
    parser.add_argument(
        "--attack",
        default="pgd:steps=20",
        help="robust accuracy attack: autoattack or pgd:steps=N (default: pgd:steps=20)",
    )
    parser.add_argument(
        "--steps", type=int, default=10, help="PGD steps of the NC views (default: 10)"
    )
    parser.add_argument(
        "--pool", type=int, default=4, help="pool feature maps to POOL×POOL (default: 4)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=256, help="points per forward pass (default: 256)"
    )
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the points and attacks (default: 0)"
    )
    parser.add_argument(
        "--data", default=None, help="measure on this dataset instead (default: --dataset)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="dataset folder (default: $NCROBUST_DATA or the cache)"
    )
    parser.add_argument("--dry-run", action="store_true", help="list models and cost, run none")
    from ncrobust.commands.sweep import add_executor_arguments

    add_executor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Validate everything, then measure each model (skipping finished ones) and summarise."""
    from ncrobust.commands.sweep import cluster_options
    from ncrobust.config import check_device
    from ncrobust.experiments.executors import require_submitit
    from ncrobust.zoo import catalog, job

    if args.device is not None:
        check_device(args.device)
    model_dir = Path(args.model_dir)
    options = job.ZooOptions(
        model_dir=str(model_dir),
        info_dirs=tuple([*args.info, str(model_dir)]),
        points=args.points,
        attack=args.attack,
        steps=args.steps,
        pool=args.pool,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        data=args.data,
        data_dir=args.data_dir,
    )
    options.check()
    cluster = cluster_options(args)
    if (cluster.gpus_per_run or 0) > 1:  # N tasks of one job would each measure the same model
        raise UsageError(f"--gpus-per-run: a zoo model runs on one GPU, got {cluster.gpus_per_run}")
    if cluster.executor != "sequential":
        require_submitit(cluster.executor)
    catalog.check_target(args.dataset, args.threat)
    job.threat_settings(args.dataset, args.threat, args.steps)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    chosen = catalog.select(args.dataset, args.threat, names, every=args.all, top=args.top)
    info_dirs = [Path(p) for p in options.info_dirs]
    entries = [
        catalog.ZooEntry(n, args.dataset, args.threat,
                         catalog.read_info(info_dirs, args.dataset, args.threat, n))
        for n in chosen
    ]  # fmt: skip
    out = Path(args.out or f"runs/zoo/{args.dataset}_{args.threat}")
    if args.dry_run:
        for entry in entries:
            print(job.plan_line(entry, out, options))
        print(f"{len(entries)} model(s); {job.COST_NOTE}")
        return 0
    if cluster.executor != "sequential":
        return _run_jobs(entries, out, options, cluster, f"{args.dataset} {args.threat}")
    data = job.load_points(args.dataset, options)
    folders, failed = [], []
    for index, entry in enumerate(entries, 1):
        folder = job.run_dir(out, entry)
        prefix = f"[{index}/{len(entries)}] {entry.name}"
        if job.is_done(folder, options):
            print(f"{prefix}: done, skipped")
            folders.append(folder)
            continue
        print(f"{prefix}: loading")
        try:
            model = catalog.load(entry, model_dir)
        except UsageError as exc:  # one missing or broken checkpoint does not stop the others
            print(f"{prefix}: failed: {exc}", file=sys.stderr)
            failed.append(entry.name)
            continue
        job.measure_entry(entry, model, data, out, options, log=lambda s: print(f"  {s}"))
        del model
        job.free_memory()
        print(f"{prefix}: written to {folder}")
        folders.append(folder)
    return _finish(folders, failed, out, f"{args.dataset} {args.threat}")


def _finish(folders: list[Path], failed: list[str], out: Path, title: str) -> int:
    """Summarise the measured models; name the failed ones (exit status 1)."""
    from ncrobust.study import zoo_summary as summary

    if folders:
        summary.write_summary(folders, out, title)
        print(f"summary of {len(folders)} model(s): {out / summary.REPORT_FILE}")
    if failed:
        print(f"not measured: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _run_jobs(
    entries: list[ZooEntry], out: Path, options: ZooOptions, cluster: ClusterOptions, title: str
) -> int:
    """Each model not done yet as one job of the local or SLURM executor; the local executor
    waits and summarises, SLURM returns once submitted (run the command again to summarise)."""
    from functools import partial

    from ncrobust.experiments.executors import (
        live_job,
        packed_jobs,
        run_local_jobs,
        submit_slurm_jobs,
    )
    from ncrobust.experiments.jobs import OutcomeJob
    from ncrobust.zoo import job

    def make(entry: ZooEntry, threads: int | None) -> OutcomeJob:
        folder = job.run_dir(out, entry)
        return OutcomeJob(job.ZooJob(entry, str(out), options, threads), folder)

    todo = []
    for entry in entries:
        folder = job.run_dir(out, entry)
        if job.is_done(folder, options):
            print(f"{entry.name}: done, skipped")
        elif busy := live_job(folder):
            print(f"{entry.name}: {busy} in a job of an earlier call, left alone")
        else:
            todo.append((str(folder), partial(make, entry)))
    if cluster.executor == "slurm" and todo:
        packed = cluster.runs_per_gpu  # K models share one GPU: one job of K tasks
        claims = submit_slurm_jobs(packed_jobs(todo, packed) if packed > 1 else todo, cluster, out)
        print(f"submitted {len(claims)} model(s) as SLURM job {claims[0].job_id.split('_')[0]};"
              " run the same command again when they are done to write the summary")  # fmt: skip
        return 0
    results = run_local_jobs(todo, cluster, report=print) if todo else {}
    failed = [e.name for e in entries if results.get(str(job.run_dir(out, e))) == "failed"]
    done = [job.run_dir(out, e) for e in entries if job.is_done(job.run_dir(out, e), options)]
    return _finish(done, failed, out, title)
