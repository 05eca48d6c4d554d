"""The ``ncrobust`` command line: one subcommand per job, each implemented in its own module.

A command's module is imported only when that command runs, so ``ncrobust --help`` stays
fast. Every module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Bad input
(:class:`~ncrobust.errors.UsageError`, and argparse's own errors, with the closest valid flag
or choice) is reported in one line and exits with status 2; the modules validate before they
compute or write anything. Anything else is a bug and keeps its traceback; ``--debug`` (or
``NCROBUST_DEBUG=1``) shows the traceback of bad input too.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn, Protocol, cast

from ncrobust import __version__
from ncrobust.errors import DiskFull, Terminated, TrainingDiverged, UsageError, closest

DEBUG_ENV = "NCROBUST_DEBUG"

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("ncrobust.commands.train", "train ST / AT / TRADES with Neural Collapse tracked"),
    "demo": ("ncrobust.commands.demo", "the main job on the embedded default data (digits)"),
    "measure": ("ncrobust.commands.measure", "measure NC of checkpoints or a run directory"),
    "eval": ("ncrobust.commands.eval", "robust accuracy of checkpoints under AutoAttack / PGD"),
    "sweep": ("ncrobust.commands.sweep", "run a grid of training runs, resuming where needed"),
    "plot": ("ncrobust.commands.plot", "draw the paper's figures from run directories"),
    "report": ("ncrobust.commands.report", "write the findings report for run directories"),
    "zoo": ("ncrobust.commands.zoo", "Neural Collapse across the public robust-model zoo"),
}

BENCHMARKS: dict[str, tuple[str, str]] = {
    "collapse": ("ncrobust.bench.collapse", "NC metric computation vs the released code's"),
    "attacks": ("ncrobust.bench.attacks", "PGD-10 throughput vs the released code's attack"),
    "train": ("ncrobust.bench.train", "training and measurement throughput vs the released loop"),
    "pack": ("ncrobust.bench.pack", "aggregate training throughput of K runs sharing a device"),
}


class CommandModule(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(module_name: str) -> CommandModule:
    return cast(CommandModule, importlib.import_module(module_name))


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (a :class:`UsageError`) naming the closest
    valid flag or choice, instead of a usage dump and ``SystemExit``."""

    chosen: argparse.ArgumentParser | None = None  # the parser of the command being run

    def error(self, message: str) -> NoReturn:
        raise UsageError(message + _suggestion(self.chosen or self, message))


def _suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    """`` (did you mean ...?)`` for a mistyped flag or an invalid choice, else ``""``."""
    unknown = re.match(r"unrecognized arguments: (.*)", message)
    if unknown:
        flags = [a for a in parser._option_string_actions if a.startswith("--")]
        guesses = [
            match[0]
            for token in unknown.group(1).split()
            if token.startswith("-")
            for match in [difflib.get_close_matches(token.split("=")[0], flags, n=1)]
            if match
        ]
        return f"; did you mean {', '.join(guesses)}?" if guesses else ""
    if message.endswith("required: COMMAND"):
        return f" (one of {', '.join(COMMANDS)}, bench; ncrobust COMMAND --help)"
    invalid = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if invalid:
        choices = re.findall(r"'([^']*)'", invalid.group(2)) or invalid.group(2).split(", ")
        return closest(invalid.group(1), choices)
    return ""


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The full parser; only the module of the command named in ``argv`` is imported."""
    parser = _Parser(
        prog="ncrobust",
        description="Neural Collapse of standard, adversarial and TRADES training.",
    )
    parser.add_argument("--version", action="version", version=f"ncrobust {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of bad input too (or set {DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = argv[0] if argv else None
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = _load(module_name)
            module.add_arguments(p)
            p.set_defaults(_module=module)
            parser.chosen = p
    bench = sub.add_parser("bench", help="benchmarks against the released code's approach")
    bench_sub = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    bench_chosen = argv[1] if chosen == "bench" and len(argv) > 1 else None
    for name, (module_name, help_text) in BENCHMARKS.items():
        p = bench_sub.add_parser(name, help=help_text, description=help_text)
        if name == bench_chosen:
            module = _load(module_name)
            module.add_arguments(p)
            p.set_defaults(_module=module)
            parser.chosen = p
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ncrobust`` console script; returns the exit status.

    Bad input exits 2, a diverged run or a full disk 1, Ctrl-C 130 and SIGTERM 143 (128 plus
    the signal), each with one line on stderr; SIGTERM is raised like Ctrl-C so that every
    temporary file is removed and the run stays resumable.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    while args_list[:1] == ["--debug"]:
        debug = True
        args_list.pop(0)
    label = args_list[0] if args_list else "ncrobust"
    previous = _on_sigterm()
    try:
        parser = build_parser(args_list)
        args = parser.parse_args(args_list)
        module: CommandModule = args._module
        label = args.command if args.command != "bench" else f"bench {args.benchmark}"
        return int(module.run(args))
    except UsageError as exc:
        if debug:
            raise
        known = label.split()[0] in (*COMMANDS, "bench")  # not an unknown command's name
        print(f"{_prefix(label if known else '')}: error: {exc}", file=sys.stderr)
        return 2
    except (TrainingDiverged, DiskFull) as exc:
        print(f"{_prefix(label)}: stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        what = "terminated (SIGTERM)" if terminated else "interrupted"
        detail = f": {exc}" if str(exc) else ""
        print(f"{_prefix(label)}: {what}{detail}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _prefix(label: str) -> str:
    """``ncrobust COMMAND``, plus ``: rank R of N`` in a process of a torchrun job (read from
    its environment: importing torch here would slow every command's start)."""
    world, rank = os.environ.get("WORLD_SIZE", "1"), os.environ.get("RANK", "0")
    if world.isdigit() and rank.isdigit() and int(world) > 1:
        return f"ncrobust {label}".rstrip() + f": rank {rank} of {world}"
    return f"ncrobust {label}".rstrip()


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one clean shutdown; a second TERM waits
    raise Terminated()


def _on_sigterm() -> Any:
    """Make SIGTERM raise :class:`Terminated`; returns the previous handler (None off-main)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
