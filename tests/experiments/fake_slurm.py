"""A stand-in for SLURM's commands, run through tiny wrappers that tests put first on PATH.

``sbatch FILE`` records the batch script and its job (or array tasks) as PENDING and prints
``Submitted batch job N``; ``sacct``/``squeue`` report the recorded states; ``scancel`` and
``scontrol requeue`` change them; ``srun`` starts the job's tasks with SLURM's environment.
Nothing runs until the test calls ``fake_slurm.py run``, which executes every PENDING or
REQUEUED job synchronously, one after another, so that tests are deterministic:

- ``--preempt JOB:EPOCH``: on its first attempt the job sends itself SLURM's preemption signal
  (submitit's USR2) right after the checkpoint of EPOCH is written;
- ``--fail JOB``: the first attempt of the job dies as a failed node would (exit 1).

All state lives in ``$FAKE_SLURM_STATE/state.json`` (guarded by a file lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE = Path(os.environ.get("FAKE_SLURM_STATE", "."))
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


@contextlib.contextmanager
def state() -> Iterator[dict[str, Any]]:
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE / "state.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = STATE / "state.json"
        data = json.loads(path.read_text()) if path.exists() else {"next": 4100, "jobs": {}}
        yield data
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)


def sbatch(args: list[str]) -> int:
    script = Path(args[-1])
    text = script.read_text()
    options = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", text, re.MULTILINE))
    with state() as data:
        job = data["next"]
        data["next"] += 1
        copy = STATE / f"{job}.sh"
        copy.write_text(text)
        tasks = [None]
        if "array" in options:
            first, last = re.match(r"(\d+)-(\d+)", options["array"]).groups()  # type: ignore[union-attr]
            tasks = list(range(int(first), int(last) + 1))
        for task in tasks:
            key = str(job) if task is None else f"{job}_{task}"
            data["jobs"][key] = {
                "state": "PENDING",
                "script": str(copy),
                "array": job,
                "task": task,
                "attempts": 0,
                "ntasks": int(options.get("ntasks-per-node", 1)) * int(options.get("nodes", 1)),
            }
        data.setdefault("submissions", []).append({"job": job, "options": options})
    print(f"Submitted batch job {job}")
    return 0


def _matching(data: dict[str, Any], ids: list[str]) -> list[str]:
    return [k for k in data["jobs"] if any(k == i or k.startswith(f"{i}_") for i in ids)]


def sacct(args: list[str]) -> int:
    ids = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    with state() as data:
        print("JobID|State|NodeList")
        for key in _matching(data, ids):
            print(f"{key}|{data['jobs'][key]['state']}|fakenode")
    return 0


def squeue(args: list[str]) -> int:
    with state() as data:
        print("JOBID STATE")
        for key, job in data["jobs"].items():
            if job["state"] not in FINISHED:
                print(f"{key} {job['state']}")
    return 0


def scancel(args: list[str]) -> int:
    ids = [a for a in args if not a.startswith("-") and not a.startswith("SIG")]
    with state() as data:
        for key in _matching(data, ids):
            if data["jobs"][key]["state"] not in FINISHED:
                data["jobs"][key]["state"] = "CANCELLED"
    return 0


def scontrol(args: list[str]) -> int:
    assert args[0] == "requeue", args
    with state() as data:
        for key in _matching(data, args[1:]):
            data["jobs"][key]["state"] = "REQUEUED"
    return 0


def srun(args: list[str]) -> int:
    """Start SLURM_NTASKS copies of the command with their ranks; log files as SLURM names them."""
    files = {"--output": "", "--error": ""}
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag in files:
            files[flag] = args.pop(0)
    env = dict(os.environ)
    array, task = env.get("SLURM_ARRAY_JOB_ID", ""), env.get("SLURM_ARRAY_TASK_ID", "")
    job = f"{array}_{task}" if array else env["SLURM_JOB_ID"]

    def expand(pattern: str, rank: int) -> str:
        for key, value in (("%A", array), ("%a", task), ("%j", job), ("%t", str(rank))):
            pattern = pattern.replace(key, value)
        return pattern

    if env.get("FAKE_SLURM_FAIL"):
        with open(expand(files["--error"], 0), "a") as err:
            err.write("slurmstepd: error: *** JOB ON fakenode CANCELLED DUE TO NODE FAILURE ***\n")
        return 1
    command = args
    if command[1:4] == ["-u", "-m", "submitit.core._submit"]:
        command = [command[0], __file__, "task", *command[4:]]
    processes = []
    for rank in range(int(env.get("SLURM_NTASKS", "1"))):
        names = {k: expand(v, rank) for k, v in files.items()}
        out = open(names["--output"], "a")  # noqa: SIM115
        err = open(names["--error"], "a")  # noqa: SIM115
        task_env = env | {"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}
        processes.append(subprocess.Popen(command, env=task_env, stdout=out, stderr=err))
    return max(p.wait() for p in processes)


def task(args: list[str]) -> int:
    """submitit's job entry point, with the preemption hook when the test asked for one."""
    epoch = os.environ.get("FAKE_SLURM_PREEMPT_EPOCH")
    if epoch is not None:
        import signal

        from ncrobust.training import trainer

        original = trainer.save_checkpoint

        def save_then_preempt(*a: Any, **kw: Any) -> Any:
            result = original(*a, **kw)
            if kw.get("epoch", a[3] if len(a) > 3 else None) == int(epoch):
                os.kill(os.getpid(), signal.SIGUSR2)  # what SLURM sends before preempting
            return result

        trainer.save_checkpoint = save_then_preempt  # type: ignore[assignment]
    from submitit.core.submission import process_job

    process_job(args[0])
    return 0


def run(args: list[str]) -> int:
    """Execute queued jobs one after another until none is left (the test's 'cluster')."""
    preempt = dict(a.split(":") for a in _values(args, "--preempt"))
    fail = set(_values(args, "--fail"))
    while True:
        with state() as data:
            queued = [k for k, j in data["jobs"].items() if j["state"] in ("PENDING", "REQUEUED")]
            if not queued:
                return 0
            key = queued[0]
            job = data["jobs"][key]
            job["state"] = "RUNNING"
            attempt = job["attempts"]
            job["attempts"] += 1
        env = dict(os.environ)
        for name in ("FAKE_SLURM_PREEMPT_EPOCH", "FAKE_SLURM_FAIL"):
            env.pop(name, None)
        env.update(
            SLURM_JOB_ID=str(9000 + len(data["jobs"]) + attempt),
            SLURM_NTASKS=str(job["ntasks"]),
            SLURM_JOB_NUM_NODES="1",
            SLURM_NODEID="0",
            SLURM_JOB_NODELIST="localhost",
        )
        if job["task"] is not None:
            env.update(SLURM_ARRAY_JOB_ID=str(job["array"]), SLURM_ARRAY_TASK_ID=str(job["task"]))
        else:
            env["SLURM_JOB_ID"] = key
        if attempt == 0 and key in preempt:
            env["FAKE_SLURM_PREEMPT_EPOCH"] = preempt[key]
        if attempt == 0 and key in fail:
            env["FAKE_SLURM_FAIL"] = "1"
        code = subprocess.call(["bash", job["script"]], env=env)
        with state() as data:
            job = data["jobs"][key]
            if job["state"] == "RUNNING":
                job["state"] = "COMPLETED" if code == 0 else "FAILED"


def _values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def install(bin_dir: Path, state_dir: Path) -> None:
    """Write the wrappers ``sbatch``, ``sacct``, ``squeue``, ``scancel``, ``scontrol``, ``srun``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("sbatch", "sacct", "squeue", "scancel", "scontrol", "srun"):
        wrapper = bin_dir / name
        wrapper.write_text(
            "#!/bin/bash\n"
            f"export FAKE_SLURM_STATE={shlex.quote(str(state_dir))}\n"
            f'exec {shlex.quote(sys.executable)} {shlex.quote(__file__)} {name} "$@"\n'
        )
        wrapper.chmod(0o755)


COMMANDS = {
    "sbatch": sbatch,
    "sacct": sacct,
    "squeue": squeue,
    "scancel": scancel,
    "scontrol": scontrol,
    "srun": srun,
    "task": task,
    "run": run,
}

if __name__ == "__main__":
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
