"""Flags shared by several commands."""

from __future__ import annotations

import argparse

from ncrobust.views import parse_pixels


def radius(text: str) -> float:
    """argparse type of a radius or step in [0,1] pixel units: a number or ``k/255``."""
    return parse_pixels(text, "radius")


def add_terminal_arguments(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` / ``--quiet``: what training prints on the terminal.

    By default one summary line per epoch, with progress bars above it when stderr is a
    terminal; ``--quiet`` prints neither (``log.txt`` keeps the lines).
    """
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="progress bars for the batches and the measurement, below the per-epoch summary "
        "lines (default: on when stderr is a terminal)",
    )
    group.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="only the per-epoch summary lines, no bars",
    )
    group.add_argument(
        "--quiet",
        action="store_true",
        help="no bars and no per-epoch lines, only errors and the outcome (log.txt keeps "
        "the lines)",
    )


def add_where_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--where KEY=VALUE,...`` run selection of ``plot`` and ``report``."""
    from ncrobust.study.study import WHERE_KEYS  # only these commands load the study package

    parser.add_argument(
        "--where",
        default=None,
        help=f"only runs matching KEY=VALUE,... (keys: {', '.join(WHERE_KEYS)}), "
        "e.g. dataset=cifar100,norm=l2",
    )
