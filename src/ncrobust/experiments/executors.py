"""A sweep's runs as submitit jobs: parallel local processes or one SLURM job array.

Each job is one run directory and runs :class:`~ncrobust.experiments.jobs.RunJob`, which is
idempotent (resume from ``checkpoints/last``, exit at once when ``DONE``) and requeues itself
on preemption. The run directory records the job that claimed it in ``RUN/job.json`` (written
atomically) and links the job's submitit folder (stdout, stderr, pickles) under ``RUN/jobs/``;
the job records how it ended in ``RUN/jobs/outcome.json``. A run directory is untrusted data:
status never unpickles anything and never reads a file outside the sweep root.
A run's state comes from its files, its lock and the job's scheduler state: a claim whose job
SLURM reports finished is stale and is retaken; a queued or running job is never doubled.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ncrobust.atomic import atomic_write_text, read_regular
from ncrobust.config import TrainConfig, yaml_problem
from ncrobust.errors import UsageError
from ncrobust.experiments.jobs import read_outcome
from ncrobust.runs.directory import RunDirectory
from ncrobust.runs.lock import lock_holder

EXECUTORS = ("sequential", "local", "slurm")
STATES = ("done", "running", "queued", "failed", "interrupted", "not started")
CLAIM_NAME = "job.json"  # RUN/job.json: the job that claimed the run (in runs.JOB_ENTRIES)
LOGS_NAME = "jobs"  # RUN/jobs/: the jobs' stdout, stderr and submitit pickles (or links to them)
SUBMIT_FOLDER = ".jobs"  # ROOT/.jobs/<job id>/: where a SLURM array's tasks keep their files
INSTALL_HINT = "pip install 'ncrobust[cluster]' (or: pip install submitit)"

# sacct states of a job that may still run, and of one that ended with an error
QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
RUNNING_STATES = {
    "RUNNING",
    "COMPLETING",
    "CONFIGURING",
    "SUSPENDED",
    "STOPPED",
    "SIGNALING",
    "STAGE_OUT",
    "RESIZING",
}
FAILED_STATES = {"FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
UNKNOWN_GRACE_S = 600.0  # a job sacct does not know yet counts as queued this long


# -- options -------------------------------------------------------------------------------


@dataclass
class ClusterOptions:
    """How a sweep's runs are executed: the executor and its resources."""

    executor: str = "sequential"
    max_parallel: int | None = None  # None: local = one per GPU (1 without GPUs), slurm = all
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "24:00:00"  # per job; a job that reaches it requeues itself and resumes
    gpus_per_run: int | None = None  # None: 1 on SLURM, 1 locally when there are GPUs, else 0
    runs_per_gpu: int = 1  # K > 1: K runs of one GPU each share it (processes or SLURM tasks)
    cpus_per_gpu: int | None = None
    mem_per_gpu: str | None = None
    constraint: str | None = None
    slurm_args: dict[str, str] = field(default_factory=dict)


CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # no newline may split a generated #SBATCH line
OPTION_FIELDS = {f.name for f in dataclasses.fields(ClusterOptions)}


def time_minutes(text: str) -> int:
    """Minutes of a SLURM time (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not match:
        raise UsageError(f"--time: expected minutes, H:MM:SS or D-HH:MM:SS, got {text!r}")
    days, first, second, third = match.groups()
    parts = [int(first), int(second or 0), int(third or 0)]
    if days is not None:  # D-H[:M[:S]]
        hours, minutes, seconds = parts
        total = int(days) * 1440 + hours * 60 + minutes + seconds / 60
    elif third is not None:  # H:M:S
        total = parts[0] * 60 + parts[1] + parts[2] / 60
    else:  # M[:S]
        total = parts[0] + parts[1] / 60
    minutes_total = max(1, round(total + 0.4999))
    return minutes_total


def validate_options(options: ClusterOptions) -> ClusterOptions:
    """Refuse bad executor settings with one message, before anything is submitted."""
    if options.executor not in EXECUTORS:
        raise UsageError(f"unknown executor {options.executor!r} (known: {', '.join(EXECUTORS)})")
    for name in ("max_parallel", "gpus_per_run", "runs_per_gpu", "cpus_per_gpu"):
        value = getattr(options, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise UsageError(f"{name.replace('_', '-')} must be an integer, got {value!r}")
        if value is not None and value < 0:
            raise UsageError(f"{name.replace('_', '-')} must be >= 0, got {value}")
    for name in ("max_parallel", "cpus_per_gpu"):
        if getattr(options, name) == 0:
            raise UsageError(f"{name.replace('_', '-')} must be >= 1")
    settings = {
        name.replace("_", "-"): getattr(options, name)
        for name in ("partition", "account", "qos", "time", "mem_per_gpu", "constraint")
    }
    settings.update({f"slurm-arg {k}": f"{k}={v}" for k, v in options.slurm_args.items()})
    for name, value in settings.items():  # each becomes one line of the job script
        if value is not None and CONTROL.search(str(value)):
            raise UsageError(f"{name}: control characters (newlines) are not allowed: {value!r}")
    if options.runs_per_gpu < 1:
        raise UsageError("runs-per-gpu must be >= 1")
    if options.runs_per_gpu > 1 and options.gpus_per_run not in (None, 1):
        raise UsageError(
            f"runs-per-gpu {options.runs_per_gpu} packs runs of one GPU each; "
            f"gpus-per-run is {options.gpus_per_run}"
        )
    time_minutes(options.time)
    if options.mem_per_gpu is not None and not re.fullmatch(
        r"\d+(\.\d+)?[KMGT]?B?", str(options.mem_per_gpu), re.IGNORECASE
    ):
        raise UsageError(f"mem-per-gpu: expected e.g. 32G or 16000M, got {options.mem_per_gpu!r}")
    return options


def load_cluster_config(path: str | Path) -> dict[str, Any]:
    """The raw settings of a ``--cluster-config`` YAML file (keys as the flags, - or _)."""
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read cluster config {file}: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"cluster config {file} is not valid YAML: {yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"cluster config {file} must be a mapping of settings")
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(values) - OPTION_FIELDS)
    if unknown:
        raise UsageError(
            f"cluster config {file}: unknown key(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(OPTION_FIELDS))})"
        )
    if "slurm_args" in values:
        extra = values["slurm_args"]
        if not isinstance(extra, dict):
            raise UsageError(f"cluster config {file}: slurm_args must be a mapping")
        values["slurm_args"] = {str(k): str(v) for k, v in extra.items()}
    for name in ("partition", "account", "qos", "time", "mem_per_gpu", "constraint"):
        if values.get(name) is not None:
            values[name] = str(values[name])
    return values


def parse_slurm_args(items: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` flags as a mapping of extra ``#SBATCH`` settings."""
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--slurm-arg expects KEY=VALUE, got {item!r}")
        extra[key.strip().lstrip("-")] = value.strip()
    return extra


def require_submitit(executor: str) -> Any:
    """The submitit module, or a usage error saying how to install it."""
    try:
        import submitit
    except ImportError as exc:
        raise UsageError(f"--executor {executor} needs submitit: {INSTALL_HINT}") from exc
    return submitit


def slurm_parameters(options: ClusterOptions, runs: int) -> dict[str, Any]:
    """submitit SlurmExecutor parameters: N GPUs = N tasks of one node (the DDP path); with
    ``runs_per_gpu`` K > 1, one GPU and K tasks, each training its own run (``runs`` counts
    the array's jobs)."""
    gpus = 1 if options.gpus_per_run is None else options.gpus_per_run
    packed = options.runs_per_gpu
    params: dict[str, Any] = {
        "job_name": "ncrobust",
        "time": time_minutes(options.time),
        "nodes": 1,
        "ntasks_per_node": packed if packed > 1 else max(1, gpus),
        "array_parallelism": options.max_parallel or max(1, runs),
    }
    if gpus:
        params["gpus_per_node"] = gpus
    if options.cpus_per_gpu:  # the GPU's CPUs, shared by the runs packed onto it
        params["cpus_per_task"] = max(1, options.cpus_per_gpu // packed)
    if options.mem_per_gpu:
        params["mem_per_gpu"] = options.mem_per_gpu
    for name in ("partition", "account", "qos", "constraint"):
        if getattr(options, name):
            params[name] = getattr(options, name)
    if options.slurm_args:
        params["additional_parameters"] = dict(options.slurm_args)
    return params


# -- claims --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobClaim:
    """The job a run directory is claimed by (``RUN/job.json``)."""

    job_id: str
    executor: str
    submitted: float
    host: str
    folder: str  # submitit's folder pattern of the job (``%j`` = job id)
    stdout: str
    stderr: str


def read_claim(root: str | Path) -> JobClaim | None:
    """The claim recorded in ``root``, or None (absent or unreadable: not a live claim)."""
    try:
        data = json.loads(read_regular(Path(root) / CLAIM_NAME, limit=1 << 16))
        claim = JobClaim(**{k: data[k] for k in JobClaim.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # a job id goes to the scheduler's commands: only ids SLURM or a local pid can have
    return claim if re.fullmatch(r"[0-9]+(_[0-9]+)?", str(claim.job_id)) else None


def write_claim(root: str | Path, claim: JobClaim, job_folder: Path) -> None:
    """Record ``claim`` atomically and link the job's folder as ``RUN/jobs/<job id>``."""
    root = Path(root)
    atomic_write_text(root / CLAIM_NAME, json.dumps(dataclasses.asdict(claim), indent=1) + "\n")
    logs = root / LOGS_NAME
    logs.mkdir(parents=True, exist_ok=True)
    if job_folder.resolve() == logs.resolve():  # the job writes into RUN/jobs itself
        return
    link = logs / claim.job_id
    tmp = logs / f".{claim.job_id}.link.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(job_folder, logs))
    os.replace(tmp, link)


def _claim_for(job: Any, executor: str, folder: Path) -> JobClaim:
    return JobClaim(
        job_id=str(job.job_id),
        executor=executor,
        submitted=time.time(),
        host=socket.gethostname(),
        folder=str(folder),
        stdout=str(job.paths.stdout),
        stderr=str(job.paths.stderr),
    )


# -- states --------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _local_job_state(claim: JobClaim, outcome: dict[str, Any] | None) -> str:
    if outcome is not None:
        return "failed" if outcome["state"] == "error" else "ended"
    if claim.host == socket.gethostname() and claim.job_id.isdigit():
        pid = int(claim.job_id)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b"submitit" if _pid_alive(pid) else b""
        if b"submitit" in cmdline:
            return "running"
    return "ended"


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """sacct's state of each job (``UNKNOWN`` when SLURM has no record), in one call."""
    if not job_ids:
        return {}
    submitit = require_submitit("slurm")
    watcher = submitit.SlurmJob.watcher
    watcher.clear()
    for job_id in job_ids:
        watcher.register_job(job_id)
    watcher.update()
    return {j: watcher.get_state(j, mode="cache").split()[0].upper() for j in job_ids}


def _slurm_job_state(claim: JobClaim, sacct: str, outcome: dict[str, Any] | None) -> str:
    if sacct in QUEUED_STATES:
        return "queued"
    if sacct in RUNNING_STATES:
        return "running"
    if sacct == "UNKNOWN" and time.time() - claim.submitted < UNKNOWN_GRACE_S:
        return "queued"
    if sacct in FAILED_STATES or (outcome is not None and outcome["state"] == "error"):
        return "failed"
    return "ended"  # completed, cancelled, timed out, preempted: the claim is stale


def live_job(root: str | Path) -> str | None:
    """``queued`` or ``running`` while the job that claimed ``root`` is alive, else None."""
    claim = read_claim(root)
    if claim is None:
        return None
    outcome = read_outcome(Path(root), claim.job_id)
    if claim.executor == "slurm":
        sacct = slurm_states([claim.job_id])[claim.job_id]
        state = _slurm_job_state(claim, sacct, outcome)
    else:
        state = _local_job_state(claim, outcome)
    return state if state in ("queued", "running") else None


@dataclass
class RunStatus:
    """What ``sweep status`` says about one run."""

    run: str
    out: str
    state: str
    epoch: int | None
    epochs: int
    job_id: str = ""
    executor: str = ""
    error: str = ""

    def line(self) -> str:
        epoch = "-" if self.epoch is None else str(self.epoch)
        parts = [
            f"{self.run:<48}",
            f"{self.state:<12}",
            f"{epoch + '/' + str(self.epochs):<9}",
            self.job_id or "-",
        ]
        if self.error:
            parts.append(f"  {self.error}")
        return " ".join(parts).rstrip()


def last_line(path: str | Path) -> str:
    """The last non-empty line of a (log) file, or ``""``."""
    try:
        with Path(path).open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 8192))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _failure(root: Path, claim: JobClaim, outcome: dict[str, Any] | None) -> str:
    """Why the job of ``claim`` failed: the error it recorded itself, else the last line of its
    stderr when that file lies inside the sweep root (a run's files name no path outside it)."""
    if outcome is not None and outcome["error"]:
        return str(outcome["error"])
    sweep = root.absolute().parent.resolve()
    try:
        stderr = Path(claim.stderr).resolve()
    except (OSError, RuntimeError, ValueError):
        return ""
    if not stderr.is_relative_to(sweep) or not stderr.is_file():
        return ""
    return last_line(stderr)


def _last_epoch(run: RunDirectory) -> int | None:
    if not run.metrics_path.is_file():
        return None
    try:
        import pyarrow.parquet as pq

        epochs = pq.read_table(run.metrics_path, columns=["epoch"]).column("epoch").to_pylist()
    except Exception:
        return None
    return max(epochs) if epochs else None


def run_statuses(configs: Sequence[TrainConfig]) -> list[RunStatus]:
    """The state of every run of ``configs`` (one scheduler query for all SLURM claims)."""
    claims = {c.out: read_claim(c.out) for c in configs}
    slurm_ids = sorted(
        {c.job_id for c in claims.values() if c is not None and c.executor == "slurm"}
    )
    sacct = slurm_states(slurm_ids) if slurm_ids else {}
    statuses = []
    for config in configs:
        run = RunDirectory(Path(config.out))
        claim = claims[config.out]
        epochs = config.epochs
        if run.exists():
            try:
                from ncrobust.config import read_config

                epochs = read_config(run.config_path).epochs
            except ValueError:
                pass
        job_state = ""
        outcome = read_outcome(run.root, claim.job_id) if claim is not None else None
        if claim is not None:
            if claim.executor == "slurm":
                job_state = _slurm_job_state(claim, sacct.get(claim.job_id, "UNKNOWN"), outcome)
            else:
                job_state = _local_job_state(claim, outcome)
        if run.is_complete():
            state = "done"
        elif lock_holder(run.root) is not None or job_state == "running":
            state = "running"
        elif job_state in ("queued", "failed"):
            state = job_state
        elif run.exists():
            state = "interrupted"
        else:
            state = "not started"
        failed = claim is not None and state == "failed"
        error = _failure(run.root, claim, outcome) if failed and claim is not None else ""
        statuses.append(
            RunStatus(
                run=run.root.name,
                out=config.out,
                state=state,
                epoch=_last_epoch(run),
                epochs=epochs,
                job_id=claim.job_id if claim is not None else "",
                executor=claim.executor if claim is not None else "",
                error=error,
            )
        )
    return statuses


# -- execution -----------------------------------------------------------------------------


# a job to run: its directory (``out``) and the picklable job made for a number of CPU threads
JobFactory = Callable[[int | None], Any]


def _run_jobs(
    configs: Sequence[TrainConfig], extend: bool, packed: bool = False
) -> list[tuple[str, JobFactory]]:
    from ncrobust.experiments.jobs import RunJob

    return [(c.out, functools.partial(RunJob, c.to_dict(), extend, packed=packed)) for c in configs]


def submit_slurm(
    configs: Sequence[TrainConfig], options: ClusterOptions, root: Path, extend: bool
) -> list[JobClaim]:
    """Submit ``configs`` as one SLURM job array; record each run's claim."""
    packed = options.runs_per_gpu  # K runs share one GPU: one job of K tasks, a run each
    jobs = _run_jobs(configs, extend, packed=packed > 1)
    return submit_slurm_jobs(packed_jobs(jobs, packed) if packed > 1 else jobs, options, root)


def packed_jobs(
    jobs: Sequence[tuple[str, JobFactory]], k: int
) -> list[tuple[Sequence[str], JobFactory]]:
    """``jobs`` in groups of ``k``, each group one job whose task i runs member i, so that k
    of them share one GPU (``--runs-per-gpu k`` on SLURM)."""
    chunks = [list(jobs[i : i + k]) for i in range(0, len(jobs), k)]
    return [
        ([out for out, _ in chunk], functools.partial(_task_group, [make for _, make in chunk]))
        for chunk in chunks
    ]


def _task_group(makers: list[JobFactory], threads: int | None) -> Any:
    from ncrobust.experiments.jobs import TaskGroupJob

    return TaskGroupJob([make(threads) for make in makers])


def submit_slurm_jobs(
    jobs: Sequence[tuple[str | Sequence[str], JobFactory]], options: ClusterOptions, root: Path
) -> list[JobClaim]:
    """Submit ``jobs`` (the run directory or directories each covers, job factory) as one SLURM
    job array; record each run's claim."""
    submitit = require_submitit("slurm")
    folder = root.absolute() / SUBMIT_FOLDER / "%j"
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=100)
    except RuntimeError as exc:
        raise UsageError(f"--executor slurm: SLURM's srun/sbatch are not on PATH ({exc})") from exc
    executor.update_parameters(**slurm_parameters(options, len(jobs)))
    # the CPUs of each task: K tasks share one GPU's CPUs with --runs-per-gpu K
    threads = options.cpus_per_gpu and max(1, options.cpus_per_gpu // options.runs_per_gpu)
    submitted = executor.submit_array([make(threads) for _, make in jobs])
    claims = []
    for (outs, _), job in zip(jobs, submitted, strict=True):
        claim = _claim_for(job, "slurm", folder)
        job.paths.folder.mkdir(parents=True, exist_ok=True)
        for out in [outs] if isinstance(outs, str) else outs:  # a packed job claims K runs
            write_claim(out, claim, job.paths.folder)
            claims.append(claim)
    return claims


def local_slots(options: ClusterOptions, gpus: int | None = None) -> list[tuple[int, ...]]:
    """The GPUs of each parallel slot (empty tuples without GPUs). With ``runs_per_gpu`` K,
    K slots share each GPU (their processes see it as their only device); slots are dealt
    round the GPUs, so fewer slots than places still spread over all of them."""
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    per_run = (1 if gpus else 0) if options.gpus_per_run is None else options.gpus_per_run
    if per_run == 0:
        return [()] * max(1, options.max_parallel or 1)
    blocks, packed = gpus // per_run, options.runs_per_gpu
    fit = blocks * packed
    parallel = options.max_parallel or fit
    if parallel > fit or fit == 0:
        raise UsageError(
            f"--max-parallel {parallel} with --gpus-per-run {per_run} and --runs-per-gpu "
            f"{packed} needs {-(-parallel // packed) * per_run} GPUs; this machine has {gpus}"
        )
    return [
        tuple(range((k % blocks) * per_run, (k % blocks + 1) * per_run)) for k in range(parallel)
    ]


def run_local(
    configs: Sequence[TrainConfig],
    options: ClusterOptions,
    extend: bool,
    report: Callable[[str], None] = print,
    poll_s: float = 0.2,
) -> dict[str, str]:
    """Run ``configs`` as local submitit jobs, at most one per slot at a time; wait for all.

    Returns out -> outcome (``trained``, ``resumed``, ``extended``, ``skipped`` or ``failed``).
    """
    on_cpu = all(config.device == "cpu" for config in configs)
    return run_local_jobs(_run_jobs(configs, extend), options, report, poll_s, on_cpu=on_cpu)


def run_local_jobs(
    jobs: Sequence[tuple[str, JobFactory]],
    options: ClusterOptions,
    report: Callable[[str], None] = print,
    poll_s: float = 0.2,
    on_cpu: bool = False,
) -> dict[str, str]:
    """Run ``jobs`` (directory, job factory) as local submitit jobs, at most one per slot at a
    time, and wait for all. Each job records ``out/jobs/outcome.json``; returns out -> its
    result, or ``failed``. Jobs ``on_cpu`` take CPU slots whether or not the machine has GPUs."""
    submitit = require_submitit("local")
    slots = local_slots(options, gpus=0 if on_cpu else None)
    tasks = max(1, len(slots[0]))
    # runs on CPUs, or packed onto shared GPUs, share the cores instead of each starting a
    # thread per core
    shared = not slots[0] or options.runs_per_gpu > 1
    threads = max(1, (os.cpu_count() or 1) // len(slots)) if shared else None
    pending = list(jobs)
    running: dict[int, tuple[str, Any]] = {}
    outcome: dict[str, str] = {}
    total, started = len(jobs), 0
    try:
        while pending or running:
            for slot, gpus in enumerate(slots):
                if slot in running or not pending:
                    continue
                out, make = pending.pop(0)
                folder = Path(out).absolute() / LOGS_NAME
                executor = submitit.LocalExecutor(folder=folder, max_num_timeout=100)
                executor.update_parameters(
                    timeout_min=time_minutes(options.time),
                    tasks_per_node=tasks,
                    gpus_per_node=len(gpus),
                    visible_gpus=gpus,
                )
                job = executor.submit(make(threads))
                write_claim(out, _claim_for(job, "local", folder), job.paths.folder)
                started += 1
                where = f" on GPU {','.join(map(str, gpus))}" if gpus else ""
                report(f"[{started}/{total}] {out}: started (local job {job.job_id}){where}")
                running[slot] = (out, job)
            for slot, (out, job) in list(running.items()):
                if not job.done():
                    continue
                del running[slot]
                recorded = read_outcome(Path(out), str(job.job_id))
                if recorded is not None and recorded["state"] == "success":
                    outcome[out] = str(recorded["result"])
                    report(f"{out}: {outcome[out]}")
                else:
                    outcome[out] = "failed"
                    reason = (
                        f"failed: {recorded['error']}"
                        if recorded is not None
                        else "interrupted: the job ended without recording an outcome (killed?)"
                    )
                    report(f"{out}: {reason}")
            if running:
                time.sleep(poll_s)
    except BaseException:
        for _, job in running.values():
            job.cancel(check=False)
        raise
    return outcome


# -- the plan of a sweep root --------------------------------------------------------------

PLAN_NAME = "sweep_plan.yaml"


def record_plan(root: Path, configs: Sequence[TrainConfig]) -> None:
    """Add ``configs`` to ``ROOT/sweep_plan.yaml`` so that ``sweep status ROOT`` knows every run."""
    plan = {c["out"]: c for c in read_plan_dicts(root)}
    plan.update({c.out: c.to_dict() for c in configs})
    atomic_write_text(root / PLAN_NAME, yaml.safe_dump(list(plan.values()), sort_keys=False))


def read_plan_dicts(root: Path) -> list[dict[str, Any]]:
    path = root / PLAN_NAME
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the sweep plan {path}: {yaml_problem(exc)}") from None
    if not isinstance(data, list) or not all(isinstance(d, dict) and "out" in d for d in data):
        raise UsageError(f"the sweep plan {path} is not a list of run configs")
    return data


def root_configs(root: Path) -> list[TrainConfig]:
    """Every run of a sweep root: its recorded plan, plus run directories found in it."""
    from ncrobust.config import apply_overrides, read_config

    if not root.is_dir():
        raise UsageError(f"sweep root {root} is not a directory")
    configs: dict[str, TrainConfig] = {}
    for data in read_plan_dicts(root):
        out = str(root / Path(str(data["out"])).name)  # a sweep's runs are children of its root
        configs[out] = apply_overrides(TrainConfig(), {**data, "out": out})
    known = {Path(out).resolve() for out in configs}
    for child in sorted(root.iterdir()):
        if child.resolve() in known or not child.is_dir():
            continue
        if (child / "config.yaml").is_file():
            config = read_config(child / "config.yaml")
            configs[str(child)] = dataclasses.replace(config, out=str(child))
        elif (child / CLAIM_NAME).is_file():
            configs[str(child)] = TrainConfig(out=str(child), epochs=0)
    return list(configs.values())


def as_json(statuses: Sequence[RunStatus]) -> str:
    return json.dumps([dataclasses.asdict(s) for s in statuses], indent=1)


def summary(statuses: Sequence[RunStatus]) -> Mapping[str, int]:
    return {state: sum(s.state == state for s in statuses) for state in STATES}
