"""``ncrobust sweep``: a grid of training runs, one directory each, here or on a cluster.

A grid is one or several products datasets × models × modes × norms × eps values × seeds on
top of a base config (a preset per dataset and norm where one exists), so that a named grid
can be exactly the paper's set of runs. :func:`expand` turns it into a plain list of
:class:`~ncrobust.config.TrainConfig` (serialisable with ``to_dict``); :func:`run_sweep` runs
it one after another (skipping completed runs, resuming interrupted ones, starting the rest),
``--executor local|slurm`` hands it to submitit (:mod:`ncrobust.analysis.cluster`) and
``sweep status ROOT`` reports every run's state.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
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
from ncrobust.config import (
    TrainConfig,
    available_presets,
    build_config,
    parse_pixels,
    scaled_step,
)
from ncrobust.errors import UsageError
from ncrobust.runlock import RunLock, lock_holder
from ncrobust.runs import RunDirectory, atomic_write_text

# Views of the small-eps study (Appendix H), measured during training at the run's cadence:
# Figure 16 is ST attacked at 2, 4 and 8 /255 (8/255 is the run's own ``pgd`` view); Figure 15
# is AT trained at 2, 4 and 8 /255, each measured on 8/255-perturbed training data.
_ST_SMALL_EPS = "clean,pgd,gaussian,targeted,pgd@train@eps=2/255,pgd@train@eps=4/255"
_AT_AT_8 = "clean,train_adv,pgd@test,gaussian,pgd@train@eps=8/255"
_MODELS = ["vgg11_bn", "preact_resnet18"]
_SEEDS = ["1", "2", "3"]
_LAYERWISE = {"final_layers": "all"}  # Figures 11-14: every layer at the end of every run
# TRADES as the paper ran it: the released code keeps the model in eval mode (BN frozen)
_TRADES_RELEASED = {**_LAYERWISE, "trades_bn_eval": "true"}

# The small-eps study: every run here also belongs to the paper's grid, with the same config.
_PAPER_EPS: list[dict[str, Any]] = [
    # Figure 16 (and Figures 2, 3, 11, 12): ST on CIFAR-10 l_inf, attacked at 2, 4, 8 /255
    {
        "datasets": ["cifar10"],
        "models": _MODELS,
        "modes": ["st"],
        "norms": ["linf"],
        "seeds": _SEEDS,
        "set": {**_LAYERWISE, "views": _ST_SMALL_EPS},
    },
    # Figure 15 (and Figures 2, 3, 11, 12 at 8/255): AT on CIFAR-10 l_inf at 2, 4, 8 /255, the
    # step scaled linearly, each measured on 8/255-perturbed training data
    {
        "datasets": ["cifar10"],
        "models": _MODELS,
        "modes": ["at"],
        "norms": ["linf"],
        "eps": ["2/255", "4/255", "8/255"],
        "seeds": _SEEDS,
        "set": {**_LAYERWISE, "views": _AT_AT_8},
    },
]

# The released code also trains ImageNette (its 160 px VGG11 and PreActResNet18) with the
# presets' threat models; the paper's text draws no ImageNette figure, so these runs mirror the
# CIFAR set of the figures: l_inf ST, AT, TRADES; l_2 AT, TRADES.
_PAPER_IMAGENETTE: list[dict[str, Any]] = [
    {
        "datasets": ["imagenette"],
        "models": _MODELS,
        "modes": ["st", "at"],
        "norms": ["linf"],
        "seeds": _SEEDS,
        "set": _LAYERWISE,
    },
    {
        "datasets": ["imagenette"],
        "models": _MODELS,
        "modes": ["at"],
        "norms": ["l2"],
        "seeds": _SEEDS,
        "set": _LAYERWISE,
    },
    {
        "datasets": ["imagenette"],
        "models": _MODELS,
        "modes": ["trades"],
        "norms": ["linf", "l2"],
        "seeds": _SEEDS,
        "set": _TRADES_RELEASED,
        "tag": "-bneval",
    },
]

# A named grid is a list of sub-grids, each a product of its axes (``set``: config fields of
# its runs; ``tag``: a suffix of the mode in its run names, for runs that differ from the
# plain mode). Runs listed by two sub-grids with the same config are run once.
GRIDS: dict[str, list[dict[str, Any]]] = {
    # Every run the paper's figures need (2-16), each measured on every layer at its end;
    # 3 seeds, 400 epochs, the presets' threat models.
    "paper": [
        *_PAPER_EPS,
        # Figures 6, 7, 10, 13, 14: ST and AT on CIFAR-100 l_inf
        {
            "datasets": ["cifar100"],
            "models": _MODELS,
            "modes": ["st", "at"],
            "norms": ["linf"],
            "seeds": _SEEDS,
            "set": _LAYERWISE,
        },
        # Figures 5 and 9: AT under l_2 on CIFAR-10 and CIFAR-100 (no figure shows ST under l_2)
        {
            "datasets": ["cifar10", "cifar100"],
            "models": _MODELS,
            "modes": ["at"],
            "norms": ["l2"],
            "seeds": _SEEDS,
            "set": _LAYERWISE,
        },
        # Figures 4, 8 (l_inf) and 5, 9 (l_2): TRADES as released, BN frozen
        {
            "datasets": ["cifar10", "cifar100"],
            "models": _MODELS,
            "modes": ["trades"],
            "norms": ["linf", "l2"],
            "seeds": _SEEDS,
            "set": _TRADES_RELEASED,
            "tag": "-bneval",
        },
        *_PAPER_IMAGENETTE,
    ],
    # the small-eps study alone (Appendix H, Figures 15 and 16)
    "paper-eps": _PAPER_EPS,
    # the ImageNette runs alone
    "paper-imagenette": _PAPER_IMAGENETTE,
    # Does "TRADES does not collapse" survive unfreezing BN? Figure 4's setting both ways on
    # the same seeds: as released (BN frozen, shared with the paper grid) and the original.
    "paper-trades-bn": [
        {
            "datasets": ["cifar10"],
            "models": _MODELS,
            "modes": ["trades"],
            "norms": ["linf"],
            "seeds": _SEEDS,
            "set": _TRADES_RELEASED,
            "tag": "-bneval",
        },
        {
            "datasets": ["cifar10"],
            "models": _MODELS,
            "modes": ["trades"],
            "norms": ["linf"],
            "seeds": _SEEDS,
            "set": {**_LAYERWISE, "trades_bn_eval": "false"},
        },
    ],
    # the embedded default, three seeds: seconds per run on a CPU
    "digits": [
        {
            "datasets": ["digits"],
            "models": ["small_cnn"],
            "modes": ["st", "at", "trades"],
            "norms": ["linf"],
            "seeds": _SEEDS,
        }
    ],
}

AXES = ("datasets", "models", "modes", "norms", "eps", "seeds")


@dataclass
class Grid:
    """One product of axes; an empty ``eps`` keeps each preset's own radius. ``tag`` marks the
    mode in run names (e.g. ``trades-bneval``) for runs whose ``overrides`` change the method."""

    datasets: list[str]
    models: list[str]
    modes: list[str]
    norms: list[str]
    seeds: list[int]
    eps: list[float] = field(default_factory=list)
    root: str = "runs/sweep"
    overrides: dict[str, Any] = field(default_factory=dict)
    tag: str = ""


def expand(grid: Grid | Sequence[Grid]) -> list[TrainConfig]:
    """Every run of ``grid`` (one product or a list of them) as a validated config with its own
    output directory; a run listed twice with the same config is kept once."""
    grids = [grid] if isinstance(grid, Grid) else list(grid)
    configs: dict[str, TrainConfig] = {}
    for sub in grids:
        for config in _expand_one(sub):
            seen = configs.setdefault(config.out, config)
            if seen != config:
                changed = sorted(k for k, v in config.to_dict().items() if seen.to_dict()[k] != v)
                raise UsageError(
                    f"the grid names two different runs {config.out} (they differ in "
                    f"{', '.join(changed)}): give one sub-grid a tag"
                )
    return list(configs.values())


def _expand_one(grid: Grid) -> list[TrainConfig]:
    configs = []
    eps_values: Sequence[float | None] = grid.eps or [None]
    if grid.tag and not re.fullmatch(r"[-A-Za-z0-9.]+", grid.tag):
        raise UsageError(f"grid tag {grid.tag!r}: use letters, digits, '-' and '.' only")
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
            values["alpha"] = scaled_step(base.alpha, base.eps, eps)
        eps_label = f"{(eps if eps is not None else base.eps) * 255:.6g}"
        values["out"] = str(
            Path(grid.root) / f"{dataset}_{model}_{mode}{grid.tag}_{norm}_eps{eps_label}_seed{seed}"
        )
        configs.append(build_config(preset, overrides=values))
    outs = [c.out for c in configs]
    if len(set(outs)) != len(outs):
        raise UsageError("the grid names two runs alike; vary seeds or eps, not duplicates")
    return configs


# train images, test images and image side of the datasets (to count work before any download)
DATASET_SIZES: dict[str, tuple[int, int, int]] = {
    "cifar10": (50_000, 10_000, 32),
    "cifar100": (50_000, 10_000, 32),
    "imagenette": (9_469, 3_925, 160),
    "digits": (1_437, 360, 8),
}


@dataclass
class Rates:
    """Our images/s per model and mode, as ``ncrobust bench train --write-rates`` writes them."""

    device: str
    image_size: int
    steps: int
    train: dict[str, dict[str, float]]
    measure: dict[str, float]


def read_rates(path: str | Path) -> Rates:
    """The rates file written by ``ncrobust bench train --write-rates`` (checked)."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"rates file {file} does not exist (write one with bench train)")
    try:
        data = json.loads(file.read_text())
        rates = Rates(
            device=str(data["device"]),
            image_size=int(data["image_size"]),
            steps=int(data["steps"]),
            train={
                str(m): {str(k): float(v) for k, v in modes.items()}
                for m, modes in data["train"].items()
            },
            measure={str(m): float(v) for m, v in data["measure"].items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"rates file {file} is not what `ncrobust bench train --write-rates` writes ({exc})"
        ) from exc
    values = [v for modes in rates.train.values() for v in modes.values()]
    if not all(v > 0 for v in [*values, *rates.measure.values()]) or rates.image_size < 1:
        raise UsageError(f"rates file {file}: rates must be > 0")
    return rates


def measured_epochs(config: TrainConfig) -> int:
    """How many times a run is measured (epoch 0, every ``measure_every``-th and the last)."""
    from ncrobust.training.trainer import is_measured

    return sum(is_measured(config, epoch) for epoch in range(config.epochs + 1))


def estimate_seconds(config: TrainConfig, rates: Rates) -> float | None:
    """Seconds of one run at ``rates`` (None when its model, mode or dataset has no rate).

    Training: epochs × train images / images-per-second of the model and mode, scaled by the
    image area and, for AT and TRADES, by (steps + 1) against the benchmark's attack steps.
    Measurement: each measurement as one pass of the benchmark's probes over train + test.
    An estimate: the views a run measures and its precision shift the real time.
    """
    sizes = DATASET_SIZES.get(config.dataset)
    train_rate = rates.train.get(config.model, {}).get(config.mode)
    measure_rate = rates.measure.get(config.model)
    if sizes is None or train_rate is None or measure_rate is None:
        return None
    n_train, n_test, side = sizes
    area = (side / rates.image_size) ** 2
    attack = 1.0 if config.mode == "st" else (config.steps + 1) / (rates.steps + 1)
    train_s = config.epochs * n_train / train_rate * area * attack
    measure_s = measured_epochs(config) * (n_train + n_test) / measure_rate * area
    return train_s + measure_s


def dry_run(configs: Sequence[TrainConfig], rates: Rates | None = None) -> str:
    """The run list with epochs, measurements, training images and (with ``rates``) the
    estimated compute, then the totals; nothing is trained or written."""
    lines = []
    total_epochs = total_images = 0
    total_s = 0.0
    unknown = []
    for config in configs:
        n_train = DATASET_SIZES.get(config.dataset, (0, 0, 0))[0]
        images = config.epochs * n_train
        total_epochs += config.epochs
        total_images += images
        line = f"{config.out}  {config.epochs} epochs, {measured_epochs(config)} measurements"
        if n_train:
            line += f", {images:,} training images"
        if rates is not None:
            seconds = estimate_seconds(config, rates)
            if seconds is None:
                unknown.append(config.out)
                line += ", no rate"
            else:
                total_s += seconds
                line += f", ~{_duration(seconds)}"
        lines.append(line)
    lines.append(f"{len(configs)} runs, {total_epochs:,} epochs, {total_images:,} training images")
    if rates is None:
        lines.append(
            "no rates given: counts only (write rates with `ncrobust bench train --write-rates "
            "FILE` on the target device, then pass --rates FILE)"
        )
    else:
        lines.append(
            f"estimated compute: ~{_duration(total_s)} on {rates.device}, runs one after another"
            + (f" ({len(unknown)} runs without a rate not counted)" if unknown else "")
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


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
        "--grid",
        choices=sorted(GRIDS),
        help="a named grid (the axes below select from it; --seeds and --eps replace its own)",
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
    if args.rates and not args.dry_run:
        raise UsageError("--rates is for the --dry-run estimate")
    rates = read_rates(args.rates) if args.rates else None
    configs = expand(grid_from_args(args))
    if options.executor != "sequential":
        require_submitit(options.executor)
    check_existing(configs, extend=args.extend)
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
