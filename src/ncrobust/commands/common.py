"""Flags shared by several commands."""

from __future__ import annotations

import argparse

from ncrobust.study.study import WHERE_KEYS


def add_where_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--where KEY=VALUE,...`` run selection of ``plot`` and ``report``."""
    parser.add_argument(
        "--where",
        default=None,
        help=f"only runs matching KEY=VALUE,... (keys: {', '.join(WHERE_KEYS)}), "
        "e.g. dataset=cifar100,norm=l2",
    )
