"""sweep --executor local|slurm and sweep status: submitit jobs, claims, requeue and retries.

The SLURM tests run against fake ``sbatch``/``sacct``/``squeue``/``scancel``/``scontrol``/
``srun`` (tests/experiments/fake_slurm.py) put first on PATH: jobs stay queued until the test
runs them, synchronously, so every state is reached deterministically.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from ncrobust.cli import main
from ncrobust.config import build_config
from ncrobust.errors import UsageError
from ncrobust.experiments import jobs
from ncrobust.experiments.executors import time_minutes
from ncrobust.runs.directory import RunDirectory
from ncrobust.training import train

pytest.importorskip("submitit")

FAKE = Path(__file__).with_name("fake_slurm.py")
TIMINGS = ("seconds", "measure_seconds")
# two tiny digits runs: one training epoch is a fraction of a second on one CPU thread
FAST = ["--set", "steps=1", "--set", "views=clean", "--set", "device=cpu"]
FAST += ["--set", "checkpoint_every=0", "--set", "measure_every=1"]


def _grid(root: Path, epochs: int = 2) -> list[str]:
    return [
        "sweep", "--grid", "digits", "--modes", "st", "--seeds", "1,2",
        "--root", str(root), "--set", f"epochs={epochs}", *FAST, "--quiet",
    ]  # fmt: skip


def _table(out: Path) -> pd.DataFrame:
    table = RunDirectory(out).read_metrics()
    table = table[~table.metric.isin(TIMINGS)]
    return table.sort_values(["epoch", "split", "view", "layer", "metric"]).reset_index(drop=True)


@pytest.fixture
def slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake SLURM's state directory; its commands come first on PATH."""
    sys.path.insert(0, str(FAKE.parent))
    try:
        import fake_slurm
    finally:
        sys.path.remove(str(FAKE.parent))
    state = tmp_path / "slurm"
    fake_slurm.install(tmp_path / "bin", state)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return state


def _state(slurm: Path) -> dict:
    return json.loads((slurm / "state.json").read_text())


def _set_state(slurm: Path, job: str, value: str) -> None:
    data = _state(slurm)
    data["jobs"][job]["state"] = value
    (slurm / "state.json").write_text(json.dumps(data))


def _run_cluster(slurm: Path, *flags: str) -> None:
    env = os.environ | {"FAKE_SLURM_STATE": str(slurm)}
    subprocess.run([sys.executable, str(FAKE), "run", *flags], env=env, check=True, timeout=300)


def _status(root: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
    capsys.readouterr()
    assert main(["sweep", "status", str(root), "--json"]) == 0
    return {row["run"]: row for row in json.loads(capsys.readouterr().out)}


def test_time_formats_are_minutes() -> None:
    assert [time_minutes(t) for t in ("90", "1:30:00", "2-00:00:00", "1-12", "45:30")] == [
        90, 90, 2880, 2160, 46,
    ]  # fmt: skip


def test_executors_without_submitit_say_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    for executor in ("local", "slurm"):
        assert main([*_grid(tmp_path), "--executor", executor]) == 2
        err = capsys.readouterr().err
        assert f"--executor {executor} needs submitit" in err
        assert "pip install 'ncrobust[cluster]'" in err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_slurm_script_claims_status_and_retry_failed(
    tmp_path: Path, slurm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "sweep"
    flags = [
        "--executor", "slurm", "--partition", "gpu", "--time", "1:30:00", "--gpus-per-run", "2",
        "--cpus-per-gpu", "3", "--mem-per-gpu", "16G", "--max-parallel", "1",
        "--account", "lab", "--qos", "high", "--constraint", "a100",
        "--slurm-arg", "mail-type=END",
    ]  # fmt: skip
    assert main([*_grid(root), *flags]) == 0
    submissions = _state(slurm)["submissions"]
    assert len(submissions) == 1  # one job array for the whole grid
    options = submissions[0]["options"]
    assert options["partition"] == "gpu" and options["time"] == "90"
    assert options["gpus-per-node"] == "2" and options["ntasks-per-node"] == "2"
    assert options["cpus-per-task"] == "3" and options["mem-per-gpu"] == "16G"
    assert options["array"] == "0-1%1" and options["account"] == "lab"
    assert options["qos"] == "high" and options["constraint"] == "a100"
    assert options["mail-type"] == "END"
    runs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(runs) == 2
    claims = [json.loads((run / "job.json").read_text()) for run in runs]
    array = str(submissions[0]["job"])
    assert sorted(c["job_id"] for c in claims) == [f"{array}_0", f"{array}_1"]
    for run, claim in zip(runs, claims, strict=True):  # the job's files are reached from the run
        assert (run / "jobs" / claim["job_id"]).resolve() == Path(claim["stdout"]).parent
        assert (run / "jobs" / claim["job_id"] / f"{claim['job_id']}_submitted.pkl").is_file()

    status = _status(root, capsys)
    assert [status[r.name]["state"] for r in runs] == ["queued", "queued"]
    assert main(["sweep", "status", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(runs[0].name in line and "queued" in line and "-/2" in line for line in lines)

    first, second = (c["job_id"] for c in claims)
    _set_state(slurm, first, "RUNNING")
    assert main([*_grid(root), *flags]) == 0  # queued and running: nothing new
    assert len(_state(slurm)["submissions"]) == 1
    assert [_status(root, capsys)[r.name]["state"] for r in runs] == ["running", "queued"]

    _set_state(slurm, second, "FAILED")
    Path(claims[1]["stderr"]).write_text("Traceback ...\nRuntimeError: CUDA error: out of memory\n")
    status = _status(root, capsys)
    assert status[runs[1].name]["state"] == "failed"
    assert status[runs[1].name]["error"] == "RuntimeError: CUDA error: out of memory"
    assert main(["sweep", "status", str(root)]) == 0
    assert "RuntimeError: CUDA error: out of memory" in capsys.readouterr().out
    assert main([*_grid(root), *flags]) == 0  # a failed run waits for --retry-failed
    assert len(_state(slurm)["submissions"]) == 1
    assert main([*_grid(root), *flags, "--retry-failed"]) == 0
    submissions = _state(slurm)["submissions"]
    assert len(submissions) == 2 and "array" not in submissions[1]["options"]  # one job
    retried = json.loads((runs[1] / "job.json").read_text())["job_id"]
    assert retried == str(submissions[1]["job"])
    assert json.loads((runs[0] / "job.json").read_text())["job_id"] == first  # untouched

    _set_state(slurm, first, "CANCELLED")  # a claim by a job that ended is stale: retaken
    assert _status(root, capsys)[runs[0].name]["state"] == "not started"
    assert main([*_grid(root), *flags]) == 0
    assert len(_state(slurm)["submissions"]) == 3
    assert json.loads((runs[0] / "job.json").read_text())["job_id"] != first


def test_slurm_jobs_survive_preemption_and_failures(
    tmp_path: Path, slurm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "sweep"
    flags = ["--executor", "slurm", "--gpus-per-run", "0", "--time", "10"]
    assert main([*_grid(root), *flags]) == 0
    array = _state(slurm)["submissions"][0]["job"]
    # task 0 is preempted after epoch 1 and requeues itself; task 1's node fails
    _run_cluster(slurm, "--preempt", f"{array}_0:1", "--fail", f"{array}_1")
    jobs = _state(slurm)["jobs"]
    assert jobs[f"{array}_0"] == jobs[f"{array}_0"] | {"state": "COMPLETED", "attempts": 2}
    assert jobs[f"{array}_1"]["state"] == "FAILED"
    preempted, failed = sorted(p for p in root.iterdir() if p.is_dir() and p.name[0] != ".")
    assert "resumed at epoch 1" in (preempted / "log.txt").read_text()
    status = _status(root, capsys)
    assert (
        status[preempted.name] | {"state": "done", "epoch": 2, "epochs": 2}
        == status[preempted.name]
    )
    assert status[failed.name]["state"] == "failed"
    assert "NODE FAILURE" in status[failed.name]["error"]

    assert main([*_grid(root), *flags]) == 0  # done and failed: nothing to submit
    assert len(_state(slurm)["submissions"]) == 1
    assert main([*_grid(root), *flags, "--retry-failed"]) == 0
    assert len(_state(slurm)["submissions"]) == 2
    _run_cluster(slurm)
    assert {row["state"] for row in _status(root, capsys).values()} == {"done"}
    # the preempted and requeued run has the table of an uninterrupted run
    reference = build_config(
        "digits",
        overrides={
            "mode": "st", "seed": 1, "epochs": 2, "steps": 1, "views": "clean", "device": "cpu",
            "checkpoint_every": 0, "measure_every": 1, "out": str(tmp_path / "reference"),
        },
    )  # fmt: skip
    assert reference.seed == int(preempted.name[-1])
    train(reference, progress=False)
    pd.testing.assert_frame_equal(_table(preempted), _table(tmp_path / "reference"))


def test_local_executor_runs_in_parallel_with_the_sequential_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(_grid(tmp_path / "sequential", epochs=1)) == 0
    local = [*_grid(tmp_path / "local", epochs=1), "--executor", "local", "--max-parallel", "2"]
    assert main(local) == 0
    out = capsys.readouterr().out
    assert out.count("started (local job") == 2 and "2 trained" in out
    names = sorted(p.name for p in (tmp_path / "sequential").iterdir() if p.is_dir())
    assert len(names) == 2
    for name in names:
        run = tmp_path / "local" / name
        claim = json.loads((run / "job.json").read_text())
        assert claim["executor"] == "local" and Path(claim["stdout"]).parent == run / "jobs"
        outcome = json.loads((run / "jobs" / "outcome.json").read_text())  # the job's own record
        assert outcome["job_id"] == claim["job_id"] and outcome["state"] == "success"
        pd.testing.assert_frame_equal(_table(tmp_path / "sequential" / name), _table(run))
    assert {r["state"] for r in _status(tmp_path / "local", capsys).values()} == {"done"}
    # a second run of the same command finds everything done and starts nothing
    assert main(local) == 0
    assert "2 skipped" in capsys.readouterr().out


def test_cluster_config_file_and_flags(tmp_path: Path, slurm: Path) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "executor: slurm\npartition: cpu\ntime: '2:00:00'\ngpus-per-run: 0\n"
        "slurm_args: {exclusive: 'user'}\n"
    )
    root = tmp_path / "sweep"
    assert main([*_grid(root), "--cluster-config", str(config), "--partition", "long"]) == 0
    (submission,) = _state(slurm)["submissions"]
    options = submission["options"]
    assert options["partition"] == "long" and options["time"] == "120"  # the flag wins
    assert options["exclusive"] == "user" and "gpus-per-node" not in options


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--partition", "gpu"], "--partition applies to --executor slurm"),
        (["--executor", "local", "--qos", "high"], "--qos applies to --executor slurm"),
        (["--max-parallel", "2"], "--max-parallel applies to --executor local or slurm"),
        (["--executor", "slurm", "--time", "soon"], "--time: expected minutes"),
        (["--executor", "slurm", "--gpus-per-run", "-1"], "gpus-per-run must be >= 0"),
        (["--executor", "slurm", "--mem-per-gpu", "lots"], "mem-per-gpu: expected e.g. 32G"),
        (["--executor", "slurm", "--slurm-arg", "exclusive"], "--slurm-arg expects KEY=VALUE"),
        (["--cluster-config", "{config}"], "unknown key(s) gpus"),
        (["--executor", "local", "--max-parallel", "0"], "max-parallel must be >= 1"),
        (["--executor", "slurm", "--partition", "gpu\n#SBATCH --x"], "partition: control char"),
        (["--executor", "slurm", "--slurm-arg", "comment=a\rb"], "slurm-arg comment: control"),
        (["--executor", "slurm"], "SLURM's srun/sbatch are not on PATH"),
    ],
)
def test_bad_executor_settings_are_refused_before_anything_runs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text("executor: slurm\ngpus: 2\n")
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    root = tmp_path / "sweep"
    flags = [f.replace("{config}", str(config)) for f in flags]
    assert main([*_grid(root), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not any(p.is_dir() for p in root.glob("*/"))  # no run directory was made


def test_sweep_actions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "frobnicate", str(tmp_path)]) == 2
    assert "unknown sweep action 'frobnicate'" in capsys.readouterr().err
    assert main(["sweep", "status", str(tmp_path / "absent")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    # with grid flags, status knows the runs that were never started
    assert main(["sweep", "status", str(tmp_path), "--grid", "digits", "--modes", "st"]) == 0
    out = capsys.readouterr().out
    assert out.count(" not started ") == 3 and out.endswith("\n3 not started\n")


def test_a_job_of_several_tasks_sets_the_torch_distributed_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    seen: dict[str, str] = {}

    def record(config: object, **kwargs: object) -> str:
        seen.update({k: os.environ.get(k, "") for k in DIST_ENV})
        return "trained"

    for name in (*DIST_ENV, "LOCAL_WORLD_SIZE", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        # setenv first records the name's state, so that what the job exports is undone after
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    slurm_task = {  # task 1 of a 2-task job, as srun starts it
        "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "77", "SLURM_NTASKS": "2",
        "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_PROCID": "1",
        "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu-node-3", "CUDA_VISIBLE_DEVICES": "0,1",
    }  # fmt: skip
    for key, value in slurm_task.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(jobs, "execute_run", record)
    config = build_config("digits", overrides={"out": "unused"}).to_dict()
    assert jobs.RunJob(config)() == "trained"
    assert {k: seen[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")} == {
        "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu-node-3",
    }  # fmt: skip
    assert seen["MASTER_PORT"].isdigit()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"  # each rank picks its LOCAL_RANK's GPU


JOB_TASK = (
    "import json, sys; from ncrobust.analysis.sweep_runs import RunJob; "
    "print(RunJob(json.loads(sys.argv[1]))())"
)


def test_a_two_task_job_trains_one_data_parallel_run(tmp_path: Path) -> None:
    """--gpus-per-run 2 on CPU: the two tasks srun starts join one gloo run through torchrun's
    environment, written by rank 0 alone, and train what one process trains."""
    import random
    import socket

    overrides = {"epochs": 2, "steps": 1, "device": "cpu", "views": "clean", "batch_size": 128}
    single = build_config("digits", overrides={**overrides, "out": str(tmp_path / "one")})
    parallel = build_config("digits", overrides={**overrides, "out": str(tmp_path / "two")})
    job = 4242  # submitit derives the master port from the job id: take one whose port is free
    while True:
        port = random.Random(str(job)).randint(20000, 60000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                break
            except OSError:
                job += 1
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    for name in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
    ):
        env.pop(name, None)
    env |= {
        "OMP_NUM_THREADS": "1", "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": str(job), "SLURM_NTASKS": "2", "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "localhost",
    }  # fmt: skip
    tasks = [
        subprocess.Popen(
            [sys.executable, "-c", JOB_TASK, json.dumps(parallel.to_dict())],
            env=env | {"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [task.communicate(timeout=240) for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs
    assert all(out.strip().endswith("trained") for out, _ in outputs)
    train(single, progress=False)
    two, one = RunDirectory(Path(parallel.out)), RunDirectory(Path(single.out))
    assert two.is_complete()
    stored = two.config_path.read_text()
    assert "world_size: 2" in stored and "sync_bn: true" in stored
    assert "2 processes, synchronised BatchNorm" in two.log_path.read_text()
    keys = ["epoch", "split", "view", "layer", "metric"]
    tables = one.read_metrics().merge(two.read_metrics(), on=keys, suffixes=("_1", "_2"))
    timing = ["seconds", "measure_seconds"]
    tables = tables[~tables.metric.isin(timing)]
    first = one.read_metrics()
    assert len(tables) == (~first.metric.isin(timing)).sum()  # every row once, timings aside
    assert not two.read_metrics().duplicated(keys).any()  # one writer
    # the same model at epoch 0: every measurement equal (the sums all-reduce, the draws are
    # the global batch's); after training, the same run up to reduction order, which SGD grows
    # (step-by-step equality of the two paths: tests/training/test_distributed.py)
    start = tables[tables.epoch == 0]
    assert len(start) > 20 and start.view.isin(["clean", "pgd"]).all()
    assert ((start.value_1 - start.value_2).abs() <= 1e-9 * (1 + start.value_1.abs())).all()
    loss = tables[(tables.epoch == 2) & (tables.view == "fit") & (tables.metric == "loss")]
    assert loss.value_2.item() == pytest.approx(loss.value_1.item(), rel=1e-3)


class _Marker:
    """A pickle payload that leaves a file behind if anything ever unpickles it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.path, "code ran"))


def test_a_crafted_run_directory_runs_no_code_and_reads_nothing_outside_the_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pickle

    from ncrobust.experiments.executors import JobClaim, _failure, read_claim

    root = tmp_path / "sweep"
    run = root / "run"
    evil = tmp_path / "elsewhere"
    (run / "jobs").mkdir(parents=True)
    evil.mkdir()
    marker = tmp_path / "marker"
    secret = evil / "secret.txt"
    secret.write_text("the secret\n")
    job = "4242"
    (evil / f"{job}_0_result.pkl").write_bytes(pickle.dumps(("error", _Marker(marker))))
    claim = {
        "job_id": job, "executor": "local", "submitted": 0.0, "host": "elsewhere",
        "folder": str(evil), "stdout": str(secret), "stderr": str(secret),
    }  # fmt: skip
    (run / "job.json").write_text(json.dumps(claim))
    (run / "jobs" / "outcome.json").symlink_to(evil / "outcome.json")
    (evil / "outcome.json").write_text(json.dumps({"job_id": job, "state": "error", "error": "x"}))
    assert main(["sweep", "status", str(root), "--json"]) == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert not marker.exists()  # nothing was unpickled
    assert status["state"] == "not started" and "secret" not in json.dumps(status)
    assert _failure(run, JobClaim(**claim), None) == ""  # stderr outside the root: not read
    (run / "job.json").write_text(json.dumps({**claim, "job_id": "--format=%x"}))
    assert read_claim(run) is None  # not an id any scheduler gives: never passed to sacct
    inside = run / "jobs" / "err.txt"
    inside.write_text("Traceback\nRuntimeError: boom\n")
    assert _failure(run, JobClaim(**{**claim, "stderr": str(inside)}), None) == "RuntimeError: boom"


def test_a_killed_local_worker_is_reported_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ncrobust import atomic
    from ncrobust.experiments.executors import ClusterOptions, run_local

    for name in ("a", "b"):  # this process is past its first write: only the worker is killed
        atomic.atomic_write_text(tmp_path / name, "x")
    monkeypatch.setenv(atomic.FAULT_ENV, "kill@1")  # the worker's first write SIGKILLs it
    overrides = {"dataset": "digits", "epochs": 1, "steps": 1, "views": "clean", "device": "cpu"}
    config = build_config(None, None, {**overrides, "out": str(tmp_path / "run")})
    lines: list[str] = []
    outcome = run_local([config], ClusterOptions(executor="local"), False, report=lines.append)
    assert outcome == {config.out: "failed"}
    assert lines[-1].endswith("interrupted: the job ended without recording an outcome (killed?)")


def test_runs_per_gpu_deals_slots_round_the_gpus_and_refuses_too_many() -> None:
    from ncrobust.experiments.executors import ClusterOptions, local_slots, validate_options

    packed = ClusterOptions(executor="local", runs_per_gpu=2)
    assert local_slots(packed, gpus=1) == [(0,), (0,)]
    assert local_slots(ClusterOptions(executor="local", runs_per_gpu=4), gpus=2) == [
        (0,), (1,), (0,), (1,), (0,), (1,), (0,), (1,)
    ]  # fmt: skip
    three = ClusterOptions(executor="local", runs_per_gpu=4, max_parallel=3)
    assert local_slots(three, gpus=2) == [(0,), (1,), (0,)]
    assert local_slots(packed, gpus=0) == [()]  # no GPU: K does not apply
    with pytest.raises(UsageError, match="--runs-per-gpu 2 needs 2 GPUs; this machine has 1"):
        local_slots(ClusterOptions(executor="local", runs_per_gpu=2, max_parallel=3), gpus=1)
    with pytest.raises(UsageError, match="runs-per-gpu must be >= 1"):
        validate_options(ClusterOptions(executor="local", runs_per_gpu=0))
    with pytest.raises(UsageError, match="packs runs of one GPU each; gpus-per-run is 2"):
        validate_options(ClusterOptions(executor="slurm", runs_per_gpu=2, gpus_per_run=2))


def test_slurm_packs_k_tasks_onto_one_gpu_each_training_its_own_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import submitit

    from ncrobust.experiments.executors import (
        ClusterOptions,
        _run_jobs,
        packed_jobs,
        slurm_parameters,
    )

    options = ClusterOptions(executor="slurm", runs_per_gpu=4, cpus_per_gpu=8)
    params = slurm_parameters(options, runs=3)
    assert params["ntasks_per_node"] == 4 and params["gpus_per_node"] == 1
    assert params["cpus_per_task"] == 2 and params["array_parallelism"] == 3
    configs = [
        build_config(
            "digits",
            overrides={
                "mode": "st", "seed": seed, "epochs": 1, "steps": 1, "views": "clean",
                "device": "cpu", "checkpoint_every": 0, "out": str(tmp_path / f"s{seed}"),
            },
        )
        for seed in (1, 2)
    ]  # fmt: skip
    ((outs, make),) = packed_jobs(_run_jobs(configs, False, packed=True), 4)  # as submit_slurm
    assert list(outs) == [c.out for c in configs]

    class Task:
        def __init__(self, rank: int) -> None:
            self.global_rank = rank
            self.job_id = "77_0"

    for rank, expected in ((1, "trained"), (2, "skipped")):  # a shorter last group idles
        monkeypatch.setattr(submitit, "JobEnvironment", lambda rank=rank: Task(rank))
        assert make(1)() == expected
    assert RunDirectory(tmp_path / "s2").is_complete() and not (tmp_path / "s1").exists()
    outcome = json.loads((tmp_path / "s2" / "jobs" / "outcome.json").read_text())
    assert (outcome["job_id"], outcome["state"]) == ("77_0", "success")  # read by sweep status


def test_local_executor_packs_two_runs_onto_one_gpu_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The packing path with CPU processes: the machine is told it has one GPU, the runs use
    device auto (the CPU here), and K = 2 processes start at once on "GPU 0"."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    auto = ["--set", "device=auto"]
    assert main([*_grid(tmp_path / "sequential", epochs=1), *auto]) == 0
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    local = [*_grid(tmp_path / "local", epochs=1), *auto, "--executor", "local"]
    assert main([*local, "--runs-per-gpu", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("(local job") == 2 and out.count("on GPU 0") == 2 and "2 trained" in out
    for name in sorted(p.name for p in (tmp_path / "sequential").iterdir() if p.is_dir()):
        pd.testing.assert_frame_equal(
            _table(tmp_path / "sequential" / name), _table(tmp_path / "local" / name)
        )


def test_packed_jobs_run_one_member_per_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any jobs (the zoo's models) packed K per GPU: task i of a group job runs member i."""
    import submitit

    from ncrobust.experiments.executors import packed_jobs

    ran: list[str] = []

    def factory(name: str, threads: int | None) -> Callable[[], str]:
        return lambda: ran.append(f"{name}/{threads}") or name

    jobs = [(f"out{i}", functools.partial(factory, f"m{i}")) for i in range(3)]
    groups = packed_jobs(jobs, 2)
    assert [list(outs) for outs, _ in groups] == [["out0", "out1"], ["out2"]]

    class Task:
        def __init__(self, rank: int) -> None:
            self.global_rank = rank

    last = groups[1][1](4)  # the shorter last group: task 1 has nothing to do
    for rank, expected in ((0, "m2"), (1, "skipped")):
        monkeypatch.setattr(submitit, "JobEnvironment", lambda rank=rank: Task(rank))
        assert last() == expected
    assert ran == ["m2/4"]
