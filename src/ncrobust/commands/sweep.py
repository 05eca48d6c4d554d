"""``ncrobust sweep``: a grid of training runs, one directory each, here or on a cluster.

``--executor local|slurm`` hands the grid to submitit (:mod:`ncrobust.experiments.executors`);
``sweep status ROOT`` reports every run's state; ``--dry-run`` lists the grid and its cost.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from ncrobust.atomic import atomic_write_text
from ncrobust.commands.common import add_terminal_arguments
from ncrobust.errors import UsageError
from ncrobust.experiments.executors import (
    ClusterOptions,
    as_json,
    load_cluster_config,
    parse_slurm_args,
    record_plan,
    require_submitit,
    root_configs,
    run_statuses,
    summary,
    validate_options,
)
from ncrobust.experiments.grids import AXES, GRIDS, Grid, dry_run, expand, read_rates
from ncrobust.experiments.jobs import check_existing
from ncrobust.experiments.sweep import dispatch, run_sweep, status
from ncrobust.tracking import check_tracking
from ncrobust.views import parse_pixels


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust sweep``."""
    parser.add_argument(
        "--grid",
        choices=sorted(GRIDS),
        help="a named grid (the axes below select from it; --seeds and --eps replace its own)",
    )
    parser.add_argument("--datasets", help="comma-separated, e.g. cifar10,cifar100")
    parser.add_argument("--models", help="comma-separated, e.g. vgg11_bn,preact_resnet18")
    parser.add_argument("--modes", help="comma-separated: st,at,trades")
    parser.add_argument("--norms", help="comma-separated: linf,l2")
    parser.add_argument(
        "--eps", help="comma-separated radii (k/255 accepted); step scaled linearly"
    )
    parser.add_argument("--seeds", help="comma-separated integers")
    parser.add_argument(
        "--root",
        default="runs/sweep",
        help="parent directory of the runs; also the tracking experiment's name with "
        "--set tracking=mlflow (default: runs/sweep)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field in every run (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="print the run list and its status")
    parser.add_argument("--write-plan", metavar="YAML", help="write the run list to a file")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the runs, their epochs and the compute they need; train nothing",
    )
    parser.add_argument(
        "--rates",
        metavar="JSON",
        help="images/s from `ncrobust bench train --write-rates` for the --dry-run estimate",
    )
    add_terminal_arguments(parser)
    add_cluster_arguments(parser)


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """``sweep status ROOT``, the executor flags and the run-state flags of ``ncrobust sweep``."""
    parser.add_argument(
        "action",
        nargs="*",
        metavar="status [ROOT]",
        help="`status ROOT`: one line per run of a sweep root (state, epochs, job, last error)",
    )
    parser.add_argument("--json", action="store_true", help="with status: JSON for scripts")
    parser.add_argument(
        "--extend", action="store_true", help="let finished runs continue to a larger --set epochs"
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="resubmit the runs whose job failed"
    )
    add_executor_arguments(parser)


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor`` and the resources of the local and SLURM executors (read back by
    :func:`cluster_options`)."""
    group = parser.add_argument_group("executors (local and slurm need: pip install submitit)")
    group.add_argument(
        "--executor",
        choices=["sequential", "local", "slurm"],
        help="sequential: one after another here; local: parallel processes here; "
        "slurm: one SLURM job array (default: sequential)",
    )
    group.add_argument("--cluster-config", metavar="YAML", help="executor settings (flags win)")
    group.add_argument("--max-parallel", type=int, help="runs at once (SLURM: array throttle)")
    group.add_argument("--partition", help="SLURM partition (default: the cluster's)")
    group.add_argument("--account", help="SLURM account to charge (default: yours)")
    group.add_argument("--qos", help="SLURM quality of service (default: the cluster's)")
    group.add_argument("--time", help="per job, e.g. 24:00:00 or 2-00:00:00 (default: 24:00:00)")
    group.add_argument(
        "--gpus-per-run",
        type=int,
        help="GPUs per run; N > 1: N DDP tasks on one node (default: 1 on SLURM and on a "
        "machine with GPUs, else 0)",
    )
    group.add_argument(
        "--runs-per-gpu",
        type=int,
        metavar="K",
        help="K runs share each GPU (local: K processes per GPU; slurm: one job of K tasks on "
        "one GPU); `ncrobust bench pack` measures the best K (default: 1)",
    )
    group.add_argument("--cpus-per-gpu", type=int, help="CPUs of each task (default: SLURM's)")
    group.add_argument("--mem-per-gpu", help="memory per GPU, e.g. 32G (default: the cluster's)")
    group.add_argument("--constraint", help="SLURM node feature, e.g. a100 (default: none)")
    group.add_argument(
        "--slurm-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra #SBATCH setting (repeatable)",
    )


def grid_from_args(args: argparse.Namespace) -> list[Grid]:
    """The sub-grids named by ``--grid``, or one product of the axes given without it.

    With ``--grid``, ``--datasets/--models/--modes/--norms`` select from each sub-grid (a
    sub-grid left empty is dropped; a value in none of them is refused), ``--seeds`` and
    ``--eps`` replace the sub-grids' own, and ``--set`` applies on top of their settings.
    """
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip().replace("-", "_")] = value
    subs: list[dict[str, Any]] = GRIDS[args.grid] if args.grid else [{}]
    chosen = {name: _split(getattr(args, name)) for name in AXES}
    if args.grid:
        for name in ("datasets", "models", "modes", "norms"):
            offered = {v for sub in subs for v in sub.get(name, [])}
            extra = [v for v in chosen[name] if v not in offered]
            if extra:
                raise UsageError(
                    f"--{name} {','.join(extra)}: not in grid {args.grid!r} "
                    f"(it has {', '.join(sorted(offered))})"
                )
    grids = []
    for sub in subs:
        axes: dict[str, list[str]] = {}
        for name in AXES:
            own = [str(v) for v in sub.get(name, [])]
            if not chosen[name]:
                axes[name] = own
            elif args.grid and name not in ("seeds", "eps"):
                axes[name] = [v for v in own if v in chosen[name]]
            else:
                axes[name] = chosen[name]
            if not args.grid and not axes[name] and name != "eps":
                raise UsageError(f"--{name} is required (or choose a --grid)")
        if any(not axes[name] for name in AXES if name != "eps"):
            continue  # nothing of this sub-grid was selected
        try:
            seeds = [int(s) for s in axes["seeds"]]
        except ValueError as exc:
            raise UsageError(f"--seeds must be integers ({exc})") from exc
        grids.append(
            Grid(
                datasets=axes["datasets"],
                models=axes["models"],
                modes=axes["modes"],
                norms=axes["norms"],
                seeds=seeds,
                eps=[parse_pixels(e, "eps") for e in axes["eps"]],
                root=args.root,
                overrides={**sub.get("set", {}), **overrides},
                tag=sub.get("tag", ""),
            )
        )
    return grids


def cluster_options(args: argparse.Namespace) -> ClusterOptions:
    """Executor settings: the ``--cluster-config`` file, then the flags given on top of it."""
    values: dict[str, Any] = {}
    if args.cluster_config:
        values.update(load_cluster_config(args.cluster_config))
    for name in (
        "executor",
        "max_parallel",
        "partition",
        "account",
        "qos",
        "time",
        "gpus_per_run",
        "runs_per_gpu",
        "cpus_per_gpu",
        "mem_per_gpu",
        "constraint",
    ):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.slurm_arg:
        values["slurm_args"] = {**values.get("slurm_args", {}), **parse_slurm_args(args.slurm_arg)}
    options = validate_options(ClusterOptions(**values))
    # a flag of another executor is most likely a forgotten --executor: say so
    only = {"slurm": set(), "local": SLURM_ONLY, "sequential": SLURM_ONLY | PARALLEL_ONLY}
    for name in sorted(only[options.executor]):
        if getattr(args, name) not in (None, []):
            needs = "slurm" if name in SLURM_ONLY else "local or slurm"
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} applies to --executor {needs} (now: {options.executor})")
    return options


SLURM_ONLY = {
    "partition", "account", "qos", "cpus_per_gpu", "mem_per_gpu", "constraint", "slurm_arg",
}  # fmt: skip
PARALLEL_ONLY = {"max_parallel", "gpus_per_run", "runs_per_gpu", "time"}


def _grid_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, a) for a in ("grid", "datasets", "models", "modes", "norms", "seeds"))


def run_status(args: argparse.Namespace) -> int:
    """``sweep status [ROOT]``: the state of every run (of the grid, or found under ROOT)."""
    if len(args.action) > 2:
        raise UsageError("usage: ncrobust sweep status ROOT [--json]")
    if _grid_given(args):
        if len(args.action) == 2:
            args.root = args.action[1]
        configs = expand(grid_from_args(args))
    else:
        configs = root_configs(Path(args.action[1] if len(args.action) == 2 else args.root))
    statuses = run_statuses(configs)
    if args.json:
        print(as_json(statuses))
        return 0
    for line in statuses:
        print(line.line())
    counts = summary(statuses)
    print(", ".join(f"{n} {state}" for state, n in counts.items() if n))
    return 0


def run(args: argparse.Namespace) -> int:
    """Expand and validate the whole grid and the executor first, then list, run or submit it."""
    if args.action:
        if args.action[0] != "status":
            raise UsageError(f"unknown sweep action {args.action[0]!r} (known: status ROOT)")
        return run_status(args)
    options = cluster_options(args)
    if args.rates and not args.dry_run:
        raise UsageError("--rates is for the --dry-run estimate")
    rates = read_rates(args.rates) if args.rates else None
    configs = expand(grid_from_args(args))
    if options.executor != "sequential":
        require_submitit(options.executor)
    check_existing(configs, extend=args.extend)
    for config in configs:  # an optional package is missing: say so before any run starts
        check_tracking(config.tracking, installed=not args.dry_run)
    if args.write_plan:
        atomic_write_text(
            Path(args.write_plan), yaml.safe_dump([c.to_dict() for c in configs], sort_keys=False)
        )
    if args.dry_run:
        print(dry_run(configs, rates))
        return 0
    if args.list:
        for config in configs:
            print(f"{status(config):12s} {config.out}")
        return 0
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    record_plan(root, configs)
    if options.executor == "sequential":
        outcome = run_sweep(
            configs,
            progress=args.progress,
            quiet=args.quiet,
            extend=args.extend,
            retry_failed=args.retry_failed,
        )
    else:
        outcome = dispatch(configs, options, root, extend=args.extend, retry=args.retry_failed)
    names = ("trained", "resumed", "extended", "skipped", "submitted", "busy", "failed")
    counts = {k: list(outcome.values()).count(k) for k in names}
    print(", ".join(f"{v} {k}" for k, v in counts.items() if v or k in ("trained", "skipped")))
    if counts["failed"] and not args.retry_failed:
        print("failed runs wait for --retry-failed (see: ncrobust sweep status ROOT)")
    return 1 if options.executor == "local" and counts["failed"] else 0
