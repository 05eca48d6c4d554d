"""``ncrobust demo``: the main job on the embedded default data, end to end on a laptop CPU
(:mod:`ncrobust.experiments.demo` says what it trains and writes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ncrobust.experiments.demo import DemoSettings, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust demo``."""
    d = DemoSettings()
    parser.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    parser.add_argument("--eps", type=float, default=d.eps, help=f"l_inf radius (default {d.eps})")
    parser.add_argument(
        "--targeted-eps",
        type=float,
        default=d.targeted_eps,
        help=f"radius of the targeted view (default {d.targeted_eps})",
    )
    parser.add_argument("--measure-every", type=int, default=d.measure_every)
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default=d.seeds,
        help="comma-separated seeds of the ST and AT runs; the other runs use the first "
        f"(default {','.join(map(str, d.seeds))})",
    )
    parser.add_argument("--steps", type=int, default=d.steps, help=f"PGD steps (default {d.steps})")
    parser.add_argument("--jobs", type=int, default=d.jobs, help="parallel training processes")


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Train the runs, then draw the figures and write the report."""
    settings = DemoSettings(
        eps=args.eps,
        targeted_eps=args.targeted_eps,
        epochs=args.epochs,
        measure_every=args.measure_every,
        seeds=args.seeds,
        jobs=args.jobs,
        steps=args.steps,
    )
    out = Path(args.out)
    paths = run_demo(settings, out, overwrite=args.overwrite)
    print(f"figures: {paths['figures']}\nreport: {paths['report']}")
    return 0
