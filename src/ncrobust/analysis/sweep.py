"""``ncrobust sweep``: a grid of training runs, one directory each, here or on a cluster.

A grid is datasets × models × modes × norms × eps values × seeds on top of a base config
(a preset per dataset and norm where one exists). :func:`expand` turns it into a plain list
of :class:`~ncrobust.config.TrainConfig` (serialisable with ``to_dict``); :func:`run_sweep`
runs it one after another (skipping completed runs, resuming interrupted ones, starting the
rest), ``--executor local|slurm`` hands it to submitit (:mod:`ncrobust.analysis.cluster`) and
``sweep status ROOT`` reports every run's state.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ncrobust.analysis.cluster import (
    ClusterOptions,
    as_json,
    load_cluster_config,
    parse_slurm_args,
    record_plan,
    require_submitit,
    root_configs,
    run_local,
    run_statuses,
    submit_slurm,
    summary,
    validate_options,
)
from ncrobust.analysis.sweep_runs import check_existing
from ncrobust.config import TrainConfig, available_presets, build_config, parse_pixels
from ncrobust.errors import UsageError
from ncrobust.runlock import RunLock, lock_holder
from ncrobust.runs import RunDirectory, atomic_write_text

GRIDS: dict[str, dict[str, list[str]]] = {
    # the paper's main grid (Sections 3.1-3.2, Appendices D-F): 2 datasets × 2 models × 3 modes
    # × 2 threat models × seeds 1, 2, 3, 400 epochs each
    "paper": {
        "datasets": ["cifar10", "cifar100"],
        "models": ["vgg11_bn", "preact_resnet18"],
        "modes": ["st", "at", "trades"],
        "norms": ["linf", "l2"],
        "seeds": ["1", "2", "3"],
    },
    # the small-eps study (Appendix H): AT at 2, 4, 8 /255 with the step scaled linearly
    "paper-eps": {
        "datasets": ["cifar10"],
        "models": ["vgg11_bn", "preact_resnet18"],
        "modes": ["at"],
        "norms": ["linf"],
        "eps": ["2/255", "4/255", "8/255"],
        "seeds": ["1", "2", "3"],
    },
    # the embedded default, three seeds: seconds per run on a CPU
    "digits": {
        "datasets": ["digits"],
        "models": ["small_cnn"],
        "modes": ["st", "at", "trades"],
        "norms": ["linf"],
        "seeds": ["1", "2", "3"],
    },
}


@dataclass
class Grid:
    """The axes of a sweep; an empty ``eps`` keeps each preset's own radius."""

    datasets: list[str]
    models: list[str]
    modes: list[str]
    norms: list[str]
    seeds: list[int]
    eps: list[float] = field(default_factory=list)
    root: str = "runs/sweep"
    overrides: dict[str, Any] = field(default_factory=dict)


def expand(grid: Grid) -> list[TrainConfig]:
    """Every run of ``grid`` as a validated config with its own output directory."""
    configs = []
    eps_values: Sequence[float | None] = grid.eps or [None]
    for dataset, model, mode, norm, eps, seed in itertools.product(
        grid.datasets, grid.models, grid.modes, grid.norms, eps_values, grid.seeds
    ):
        preset: str | None = f"{dataset}-{norm}"
        if preset not in available_presets():
            preset = dataset if dataset in available_presets() else None
        values: dict[str, Any] = {
            "dataset": dataset,
            "model": model,
            "mode": mode,
            "norm": norm,
            "seed": seed,
            **grid.overrides,
        }
        base = build_config(preset, overrides=values | {"out": "unused"})
        if eps is not None:  # small-eps runs scale the step linearly with eps
            values["eps"] = eps
            values["alpha"] = base.alpha * eps / base.eps
        eps_label = f"{(eps if eps is not None else base.eps) * 255:.6g}"
        values["out"] = str(
            Path(grid.root) / f"{dataset}_{model}_{mode}_{norm}_eps{eps_label}_seed{seed}"
        )
        configs.append(build_config(preset, overrides=values))
    outs = [c.out for c in configs]
    if len(set(outs)) != len(outs):
        raise UsageError("the grid names two runs alike; vary seeds or eps, not duplicates")
    return configs


def status(config: TrainConfig) -> str:
    """``done``, ``running`` (locked by a live process), ``interrupted`` or ``new``."""
    run = RunDirectory(Path(config.out))
    if run.is_complete():
        return "done"
    if lock_holder(run.root) is not None:
        return "running"
    return "interrupted" if run.exists() else "new"


def run_sweep(
    configs: Sequence[TrainConfig],
    progress: bool | None = None,
    *,
    extend: bool = False,
    retry_failed: bool = False,
) -> dict[str, str]:
    """Train every run not yet done, one after another; returns out -> what happened.

    Runs locked by a live process or claimed by a queued or running job are left alone
    (``busy``); runs whose job failed wait for ``retry_failed``. A run on disk made with another
    config is refused before anything runs (``extend`` lets it grow to more epochs).
    """
    from ncrobust.analysis.sweep_runs import execute_run, stored_differences
    from ncrobust.runlock import RunLocked

    check_existing(configs, extend=extend)
    states = {s.out: s.state for s in run_statuses(configs)}
    outcome = {}
    for index, config in enumerate(configs, 1):
        state = states[config.out]
        if state == "done" and stored_differences(config):
            state = "to extend"
        print(f"[{index}/{len(configs)}] {config.out}: {state}", flush=True)
        if state in ("running", "queued"):
            outcome[config.out] = "busy"
            continue
        if state == "failed" and not retry_failed:
            outcome[config.out] = "failed"
            continue
        try:
            outcome[config.out] = execute_run(config, extend=extend, progress=progress)
        except RunLocked as exc:  # taken by another process since the states were read
            print(f"[{index}/{len(configs)}] {config.out}: busy ({exc})", flush=True)
            outcome[config.out] = "busy"
    return outcome


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust sweep``."""
    parser.add_argument(
        "--grid", choices=sorted(GRIDS), help="a named grid (axes below override it)"
    )
    parser.add_argument("--datasets", help="comma-separated")
    parser.add_argument("--models", help="comma-separated")
    parser.add_argument("--modes", help="comma-separated: st,at,trades")
    parser.add_argument("--norms", help="comma-separated: linf,l2")
    parser.add_argument(
        "--eps", help="comma-separated radii (k/255 accepted); step scaled linearly"
    )
    parser.add_argument("--seeds", help="comma-separated integers")
    parser.add_argument("--root", default="runs/sweep", help="parent directory of the runs")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field in every run (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="print the run list and its status")
    parser.add_argument("--write-plan", metavar="YAML", help="write the run list to a file")
    parser.add_argument("--progress", dest="progress", action="store_true", default=None)
    parser.add_argument("--quiet", dest="progress", action="store_false")
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
    group = parser.add_argument_group("executors (local and slurm need: pip install submitit)")
    group.add_argument(
        "--executor",
        choices=["sequential", "local", "slurm"],
        help="sequential (default): one after another here; local: parallel processes here; "
        "slurm: one SLURM job array",
    )
    group.add_argument("--cluster-config", metavar="YAML", help="executor settings (flags win)")
    group.add_argument("--max-parallel", type=int, help="runs at once (SLURM: array throttle)")
    group.add_argument("--partition")
    group.add_argument("--account")
    group.add_argument("--qos")
    group.add_argument("--time", help="per job, e.g. 24:00:00 or 2-00:00:00 (default 24 h)")
    group.add_argument("--gpus-per-run", type=int, help="N > 1: N DDP tasks on one node")
    group.add_argument("--cpus-per-gpu", type=int)
    group.add_argument("--mem-per-gpu", help="e.g. 32G")
    group.add_argument("--constraint")
    group.add_argument(
        "--slurm-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra #SBATCH setting (repeatable)",
    )


def grid_from_args(args: argparse.Namespace) -> Grid:
    """The grid named by ``--grid`` with the axes given on the command line overriding it."""
    base = GRIDS.get(args.grid or "", {})

    def axis(name: str) -> list[str]:
        values = _split(getattr(args, name)) or base.get(name, [])
        if not values and name != "eps":
            raise UsageError(f"--{name} is required (or choose a --grid)")
        return values

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip().replace("-", "_")] = value
    try:
        seeds = [int(s) for s in axis("seeds")]
    except ValueError as exc:
        raise UsageError(f"--seeds must be integers ({exc})") from exc
    return Grid(
        datasets=axis("datasets"),
        models=axis("models"),
        modes=axis("modes"),
        norms=axis("norms"),
        seeds=seeds,
        eps=[parse_pixels(e, "eps") for e in axis("eps")],
        root=args.root,
        overrides=overrides,
    )


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
PARALLEL_ONLY = {"max_parallel", "gpus_per_run", "time"}


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
    configs = expand(grid_from_args(args))
    if options.executor != "sequential":
        require_submitit(options.executor)
    check_existing(configs, extend=args.extend)
    if args.write_plan:
        atomic_write_text(
            Path(args.write_plan), yaml.safe_dump([c.to_dict() for c in configs], sort_keys=False)
        )
    if args.list:
        for config in configs:
            print(f"{status(config):12s} {config.out}")
        return 0
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    record_plan(root, configs)
    if options.executor == "sequential":
        outcome = run_sweep(
            configs, progress=args.progress, extend=args.extend, retry_failed=args.retry_failed
        )
    else:
        outcome = dispatch(configs, options, root, extend=args.extend, retry=args.retry_failed)
    names = ("trained", "resumed", "extended", "skipped", "submitted", "busy", "failed")
    counts = {k: list(outcome.values()).count(k) for k in names}
    print(", ".join(f"{v} {k}" for k, v in counts.items() if v or k in ("trained", "skipped")))
    if counts["failed"] and not args.retry_failed:
        print("failed runs wait for --retry-failed (see: ncrobust sweep status ROOT)")
    return 1 if options.executor == "local" and counts["failed"] else 0


def dispatch(
    configs: Sequence[TrainConfig],
    options: ClusterOptions,
    root: Path,
    *,
    extend: bool,
    retry: bool,
) -> dict[str, str]:
    """Hand the runs that need work to the local or SLURM executor; leave the others alone."""
    from ncrobust.analysis.sweep_runs import stored_differences

    with RunLock(root):  # one submitting sweep per root at a time
        outcome: dict[str, str] = {}
        todo = []
        for state in run_statuses(configs):
            config = next(c for c in configs if c.out == state.out)
            if state.state == "done" and not stored_differences(config):
                outcome[config.out] = "skipped"
            elif state.state in ("running", "queued"):
                print(f"{config.out}: {state.state} (job {state.job_id or '-'}), left alone")
                outcome[config.out] = "busy"
            elif state.state == "failed" and not retry:
                print(f"{config.out}: failed (job {state.job_id}): {state.error}")
                outcome[config.out] = "failed"
            else:
                todo.append(config)
        if not todo:
            return outcome
        if options.executor == "slurm":
            claims = submit_slurm(todo, options, root, extend)
            for config, claim in zip(todo, claims, strict=True):
                print(f"{config.out}: submitted as SLURM job {claim.job_id}")
                outcome[config.out] = "submitted"
            return outcome
        outcome.update(run_local(todo, options, extend))
        return outcome
