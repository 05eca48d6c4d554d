"""``ncrobust demo``: the main job on the embedded default data, end to end on a laptop CPU
(:mod:`ncrobust.experiments.demo` says what it trains and writes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ncrobust.commands.common import radius
from ncrobust.experiments.demo import DemoSettings, run_demo
from ncrobust.views import format_pixels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust demo``."""
    d = DemoSettings()
    parser.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    integers = (
        ("--epochs", d.epochs, "training epochs"),
        (
            "--measure-every",
            d.measure_every,
            "measure NC every k epochs, plus epoch 0 and the last",
        ),
        ("--steps", d.steps, "PGD steps"),
        ("--jobs", d.jobs, "runs trained at once, one process and thread each (1: all cores)"),
    )
    for flag, value, what in integers:
        parser.add_argument(flag, type=int, default=value, help=f"{what} (default: {value})")
    radii = (
        ("--eps", d.eps, "l_inf training and PGD radius"),
        ("--targeted-eps", d.targeted_eps, "l_inf radius of the targeted view"),
    )
    for flag, pixels, what in radii:
        parser.add_argument(
            flag,
            type=radius,
            default=pixels,
            help=f"{what} in [0,1] pixel units, a number or k/255 "
            f"(default: {format_pixels(pixels)})",
        )
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default=d.seeds,
        help="comma-separated seeds of the ST and AT runs; the other runs use the first "
        f"(default: {','.join(map(str, d.seeds))})",
    )
    parser.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard scalars and the config of each run (RUN/tensorboard)",
    )
    parser.add_argument(
        "--tracking",
        choices=["mlflow"],
        default="",
        help="log each run (config, metric rows, files) and the figures and report to MLflow, "
        "one experiment named after --out (default: off)",
    )
    parser.add_argument(
        "--tracking-dir",
        default="",
        help="MLflow store, a path or URI (default: $MLFLOW_TRACKING_URI, else ./mlruns)",
    )


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
        tensorboard=args.tensorboard,
        tracking=args.tracking,
        tracking_dir=args.tracking_dir,
    )
    run_demo(settings, Path(args.out), overwrite=args.overwrite)
    return 0
