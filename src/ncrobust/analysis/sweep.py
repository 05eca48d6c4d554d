"""``ncrobust sweep``: a grid of training runs, one directory each, run one after another.

A grid is datasets × models × modes × norms × eps values × seeds on top of a base config
(a preset per dataset and norm where one exists). :func:`expand` turns it into a plain list
of :class:`~ncrobust.config.TrainConfig` (serialisable with ``to_dict``, so the run list can
later be handed to a cluster scheduler); :func:`run_sweep` skips completed runs, resumes
interrupted ones and starts the rest.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ncrobust.config import TrainConfig, available_presets, build_config, parse_pixels
from ncrobust.errors import UsageError
from ncrobust.runs import RunDirectory

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
    """``done``, ``interrupted`` or ``new`` for the run directory of ``config``."""
    run = RunDirectory(Path(config.out))
    if run.is_complete():
        return "done"
    return "interrupted" if run.exists() else "new"


def run_sweep(configs: Sequence[TrainConfig], progress: bool | None = None) -> dict[str, str]:
    """Train every run not yet done (resuming interrupted ones); returns out -> what happened."""
    from ncrobust.training import resume_config, train

    outcome = {}
    for index, config in enumerate(configs, 1):
        state = status(config)
        print(f"[{index}/{len(configs)}] {config.out}: {state}", flush=True)
        if state == "done":
            outcome[config.out] = "skipped"
            continue
        if state == "interrupted":
            train(resume_config(config.out, config.device), resume=True, progress=progress)
            outcome[config.out] = "resumed"
        else:
            train(config, progress=progress)
            outcome[config.out] = "trained"
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


def run(args: argparse.Namespace) -> int:
    """Expand and validate the whole grid first, then list or run it."""
    configs = expand(grid_from_args(args))
    if args.write_plan:
        Path(args.write_plan).write_text(
            yaml.safe_dump([c.to_dict() for c in configs], sort_keys=False)
        )
    if args.list:
        for config in configs:
            print(f"{status(config):12s} {config.out}")
        return 0
    outcome = run_sweep(configs, progress=args.progress)
    counts = {k: list(outcome.values()).count(k) for k in ("trained", "resumed", "skipped")}
    print(", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0
