"""Sweeps: a grid's runs, one directory each, run here one after another or handed to an
executor (local processes or SLURM through submitit, :mod:`ncrobust.experiments.executors`).

:func:`run_sweep` skips completed runs, resumes interrupted ones and starts the rest;
:func:`dispatch` hands the runs that need work to an executor and leaves busy ones alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ncrobust.config import TrainConfig
from ncrobust.experiments.executors import ClusterOptions, run_local, run_statuses, submit_slurm
from ncrobust.experiments.grids import Grid, expand
from ncrobust.experiments.jobs import check_existing
from ncrobust.runs.directory import RunDirectory
from ncrobust.runs.lock import RunLock, lock_holder

__all__ = ["Grid", "dispatch", "expand", "run_sweep", "status"]


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
    quiet: bool = False,
    extend: bool = False,
    retry_failed: bool = False,
) -> dict[str, str]:
    """Train every run not yet done, one after another; returns out -> what happened.

    Runs locked by a live process or claimed by a queued or running job are left alone
    (``busy``); runs whose job failed wait for ``retry_failed``. A run on disk made with another
    config is refused before anything runs (``extend`` lets it grow to more epochs).
    """
    from ncrobust.experiments.jobs import execute_run, stored_differences
    from ncrobust.runs.lock import RunLocked

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
            outcome[config.out] = execute_run(config, extend=extend, progress=progress, quiet=quiet)
        except RunLocked as exc:  # taken by another process since the states were read
            print(f"[{index}/{len(configs)}] {config.out}: busy ({exc})", flush=True)
            outcome[config.out] = "busy"
    return outcome


def dispatch(
    configs: Sequence[TrainConfig],
    options: ClusterOptions,
    root: Path,
    *,
    extend: bool,
    retry: bool,
) -> dict[str, str]:
    """Hand the runs that need work to the local or SLURM executor; leave the others alone."""
    from ncrobust.experiments.jobs import stored_differences

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
