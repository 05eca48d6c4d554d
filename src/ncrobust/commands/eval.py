"""``ncrobust eval``: robust accuracy of a run's kept checkpoints under strong attacks.

Each chosen checkpoint is rebuilt with the run's own config and evaluated by
:func:`ncrobust.evaluation.robust_accuracy.evaluate` (AutoAttack, PGD with restarts); the rows go
to ``RUN/robustness.parquet`` as soon as each attack finishes (rows with the same epoch, split,
attack, norm, eps and metric are replaced), so a kill loses nothing already evaluated.
Defaults come from the run: its norm, eps, PGD step (as a fraction of eps) and seed.
"""

from __future__ import annotations

import argparse

from ncrobust.attacks import NORMS
from ncrobust.runs.tables import AUTOATTACK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust eval``."""
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="run directories, or folders holding run directories"
    )
    parser.add_argument(
        "--epochs",
        default="last",
        help="kept checkpoints to evaluate: last, all, or comma-separated epochs (default: last)",
    )
    parser.add_argument("--splits", default="test", help="train and/or test (default: test)")
    parser.add_argument(
        "--attacks",
        default=AUTOATTACK,
        help="comma-separated: autoattack (the standard suite), pgd:steps=S:restarts=R[:step=F] "
        "(F: step as a fraction of eps, the run's alpha/eps if not given) (default: autoattack)",
    )
    parser.add_argument(
        "--eps",
        help="comma-separated radii in [0,1] pixel units, numbers or k/255 (default: the run's)",
    )
    parser.add_argument("--norm", choices=NORMS, help="threat model (default: the run's)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N points of each split")
    parser.add_argument("--seed", type=int, help="seed of the attacks (default: the run's seed)")
    parser.add_argument(
        "--batch-size", type=int, default=500, help="points per attack batch (default: 500)"
    )
    parser.add_argument(
        "--device", default=None, help="auto, cpu, cuda or cuda:N (default: the run's device)"
    )
    parser.add_argument(
        "--no-checks",
        dest="checks",
        action="store_false",
        help="skip the gradient-masking checks (PGD-10 at 1, 2 and 4 x eps on the same points, "
        "zero gradients, randomised or probability outputs, Square's gain)",
    )
    parser.add_argument(
        "--transfer-from",
        type=int,
        metavar="EPOCH",
        help="masking check: PGD-10 made on this kept checkpoint of each run, transferred to "
        "the evaluated one, on the points every attack left robust",
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate (see :func:`~ncrobust.evaluation.runs.evaluate_runs`) and print one line per
    attack, then the table."""
    import pandas as pd

    from ncrobust.evaluation.runs import evaluate_runs, summary

    results = evaluate_runs(
        args.runs,
        epochs=args.epochs,
        splits=args.splits,
        attacks=args.attacks,
        eps=args.eps,
        norm=args.norm,
        limit=args.limit,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        checks=args.checks,
        transfer_from=args.transfer_from,
    )
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary(results).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0
