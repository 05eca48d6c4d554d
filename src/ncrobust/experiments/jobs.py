"""One run of a sweep, idempotent: compare with what is on disk, then train, resume or skip.

Every executor (sequential, local processes, SLURM jobs) runs a grid point through
:func:`execute_run`, so that a job started twice, requeued or retried does the same thing:
it exits at once when the run is ``DONE``, resumes from ``checkpoints/last`` when the run
exists, and starts it otherwise. A run already on disk whose stored config differs from the
grid's is refused (:func:`check_existing`), except that ``extend=True`` lets a run continue to
more epochs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ncrobust.atomic import atomic_write_text, read_regular
from ncrobust.config import (
    PLACEMENT_FIELDS,
    TrainConfig,
    apply_overrides,
    read_config,
    write_config,
)
from ncrobust.errors import UsageError
from ncrobust.runs.directory import RunDirectory

OUTCOME_PATH = Path("jobs") / "outcome.json"  # RUN/jobs/outcome.json: how the last job ended


def stored_differences(config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{field: (stored, grid)}`` for the run of ``config`` already on disk (empty if none)."""
    run = RunDirectory(Path(config.out))
    if not run.exists():
        return {}
    stored = read_config(run.config_path).to_dict()
    wanted = config.to_dict()
    return {
        name: (stored.get(name), value)
        for name, value in wanted.items()
        if name not in PLACEMENT_FIELDS and stored.get(name) != value
    }


def _describe(differences: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(differences.items()))


def check_existing(configs: Sequence[TrainConfig], extend: bool = False) -> None:
    """Refuse, before anything runs, grid points whose run on disk was made differently.

    With ``extend`` a run may differ in ``epochs`` alone, and only to more epochs.
    """
    problems = []
    for config in configs:
        differences = stored_differences(config)
        if not differences:
            continue
        if extend and set(differences) == {"epochs"}:
            old, new = differences["epochs"]
            if new > old:
                continue
            problems.append(f"{config.out}: epochs {old} -> {new} (--extend only adds epochs)")
            continue
        hint = " (pass --extend to train it on)" if set(differences) == {"epochs"} else ""
        problems.append(f"{config.out}: {_describe(differences)}{hint}")
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise UsageError(
            "the grid differs from runs already on disk: " + "; ".join(problems[:3]) + more
        )


def extend_run(config: TrainConfig) -> None:
    """Let the run of ``config`` continue to ``config.epochs``: its only difference is epochs.

    ``DONE`` goes first, then the stored config is rewritten with the new epoch count; a kill
    between the two leaves an unfinished run of the old length, which the next extension
    (or plain resume) handles.
    """
    run = RunDirectory(Path(config.out))
    stored = read_config(run.config_path)
    if config.epochs < stored.epochs:
        raise UsageError(f"{config.out}: --extend cannot shorten a run of {stored.epochs} epochs")
    run.done_path.unlink(missing_ok=True)
    write_config(dataclasses.replace(stored, epochs=config.epochs), run.config_path)
    run.log(f"extended from {stored.epochs} to {config.epochs} epochs")


def execute_run(
    config: TrainConfig,
    *,
    extend: bool = False,
    progress: bool | None = False,
    quiet: bool = False,
) -> str:
    """Bring one run to ``DONE``; returns ``skipped``, ``resumed``, ``extended`` or ``trained``."""
    from ncrobust.training import resume_config, train

    check_existing([config], extend=extend)
    run = RunDirectory(Path(config.out))
    outcome = "resumed"
    if run.exists() and stored_differences(config):  # only a longer run gets here
        if os.environ.get("RANK", "0") == "0":  # in a data-parallel job only rank 0 writes
            extend_run(config)
        outcome = "extended"
    elif run.is_complete():
        return "skipped"
    if run.exists():
        # every rank resumes to the grid's length, whether or not rank 0 rewrote config.yaml yet
        resumed = resume_config(config.out, config.device)
        longer = dataclasses.replace(resumed, epochs=config.epochs)
        train(longer, resume=True, progress=progress, quiet=quiet)
        return outcome
    train(config, progress=progress, quiet=quiet)
    return "trained"


class RunJob:
    """The callable a submitit job runs: one grid point, requeued as itself on preemption.

    submitit calls :meth:`checkpoint` on SLURM's preemption or time-limit signal; the finished
    epochs are already on disk, so the requeued job just calls :func:`execute_run` again and
    resumes. A job of several tasks (``--gpus-per-run`` > 1) exports the torch.distributed
    environment first, so every task joins the same data-parallel run; each task decides
    start/resume/skip from the files, which agree because rank 0 writes nothing before the
    process group has formed (every task is then inside ``train``). A ``packed`` job is one of
    K runs sharing a GPU (``--runs-per-gpu K``, a member of a
    :class:`TaskGroupJob`): its task trains this run alone and records its own outcome.
    """

    def __init__(
        self,
        config: dict[str, Any],
        extend: bool = False,
        threads: int | None = None,
        packed: bool = False,
    ) -> None:
        self.config = config
        self.extend = extend
        self.threads = threads  # CPU threads of torch in this job (None: torch's default)
        self.packed = packed

    def __call__(self) -> str:
        import submitit

        env = submitit.JobEnvironment()
        if not self.packed and env.num_tasks > 1 and "WORLD_SIZE" not in os.environ:
            # each task keeps every GPU of the job visible and uses the one of its LOCAL_RANK
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        record = self.packed or env.global_rank == 0  # a data-parallel run: rank 0 records
        job_id = str(env.job_id)
        config = apply_overrides(TrainConfig(), self.config)
        try:
            result = execute_run(config, extend=self.extend, progress=False)
        except BaseException as exc:
            if record:
                write_outcome(Path(config.out), job_id, "error", _reason(exc))
            raise
        if record:
            write_outcome(Path(config.out), job_id, "success", result=result)
        return result

    def checkpoint(self) -> Any:
        """Requeue this same job (submitit's preemption hook)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


class OutcomeJob:
    """A submitit job around any picklable callable that returns a one-word result: it records
    ``root/jobs/outcome.json`` as :class:`RunJob` does (what ``run_local_jobs`` reads) and
    requeues itself on preemption, so a job that is done already returns at once."""

    def __init__(self, job: Callable[[], str], root: str | Path) -> None:
        self.job = job
        self.root = str(root)

    def __call__(self) -> str:
        import submitit

        job_id = str(submitit.JobEnvironment().job_id)
        try:
            result = self.job()
        except BaseException as exc:
            write_outcome(Path(self.root), job_id, "error", _reason(exc))
            raise
        write_outcome(Path(self.root), job_id, "success", result=str(result))
        return result

    def checkpoint(self) -> Any:
        """Requeue this same job (submitit's preemption hook)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


class TaskGroupJob:
    """One SLURM job of K tasks sharing one GPU (``--runs-per-gpu K``): task ``i`` runs member
    ``i`` (each records its own outcome); a task without a member (the last group may be
    shorter) has nothing to do. Requeued as a whole on preemption; finished members return at
    once."""

    def __init__(self, members: list[Callable[[], str]]) -> None:
        self.members = members

    def __call__(self) -> str:
        import submitit

        rank = submitit.JobEnvironment().global_rank
        return self.members[rank]() if rank < len(self.members) else "skipped"

    def checkpoint(self) -> Any:
        """Requeue this same job (submitit's preemption hook)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def _reason(exc: BaseException) -> str:
    """One line naming an exception (its type when it has no message)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def write_outcome(root: Path, job_id: str, state: str, error: str = "", result: str = "") -> None:
    """Record, as JSON inside the run, how job ``job_id`` ended (``success`` or ``error``).

    ``sweep status`` reads this instead of submitit's result pickles, which a crafted run
    directory could turn into code execution. Nothing is written through a symlinked folder.
    """
    path = root / OUTCOME_PATH
    if root.is_symlink() or path.parent.is_symlink():
        return
    record = {
        "job_id": job_id,
        "state": state,
        "error": error,
        "result": result,
        "finished": time.time(),
    }
    atomic_write_text(path, json.dumps(record) + "\n")


def read_outcome(root: Path, job_id: str) -> dict[str, Any] | None:
    """The outcome job ``job_id`` recorded in ``root`` (None when absent, malformed or another
    job's); the file is read as plain data and never through a symlink."""
    try:
        data = json.loads(read_regular(root / OUTCOME_PATH, limit=1 << 16))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(data, dict)
        or data.get("job_id") != job_id
        or data.get("state") not in ("success", "error")
    ):
        return None
    return {
        "state": data["state"],
        "error": " ".join(str(data.get("error", "")).split())[:500],
        "result": str(data.get("result", "")),
    }
