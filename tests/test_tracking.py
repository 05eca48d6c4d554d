"""Experiment tracking offline: an MLflow file store gets the config, every metric row per
epoch, the run's files and a link to the run directory; a resume continues the same run."""

from __future__ import annotations

from pathlib import Path

import pytest

from ncrobust.config import build_config
from ncrobust.errors import UsageError
from ncrobust.runs.directory import RunDirectory
from ncrobust.tracking import RUN_DIR_TAG, Tracker, check_tracking, metric_key, open_tracker
from ncrobust.training import train

pytest.importorskip("mlflow")


def _config(out: Path, store: Path, epochs: int) -> object:
    return build_config(
        "digits",
        overrides={
            "epochs": epochs, "steps": 1, "mode": "st", "eps": 0.15, "alpha": 0.05,
            "views": ["clean", "targeted@eps=0.3"], "splits": ["test"], "device": "cpu",
            "measure_batch_size": 2048, "out": str(out), "tracking": "mlflow",
            "tracking_dir": str(store),
        },
    )  # fmt: skip


def test_a_run_and_its_resume_are_one_tracked_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    store, out = tmp_path / "store", tmp_path / "grid" / "run"
    train(_config(out, store, 2), quiet=True, stop_after=1)  # type: ignore[arg-type]
    train(_config(out, store, 2), resume=True, quiet=True)  # type: ignore[arg-type]
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("grid")  # the folder holding the run
    assert experiment is not None
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == "run"
    assert tracked.data.tags[RUN_DIR_TAG] == str(out.resolve())
    assert tracked.data.params["mode"] == "st" and tracked.data.params["eps"] == "0.15"
    table = RunDirectory(out).read_metrics()
    assert set(table.epoch) == {0, 1, 2}
    for row in table.dropna(subset=["value"]).itertuples():
        history = client.get_metric_history(tracked.info.run_id, metric_key(row._asdict()))
        logged = {m.step: m.value for m in history}
        assert logged[row.epoch] == pytest.approx(row.value, rel=1e-9), metric_key(row._asdict())
    assert "test/targeted_eps_0.3/penultimate/nc1" in tracked.data.metrics
    files = {f.path for f in client.list_artifacts(tracked.info.run_id)}
    assert {"config.yaml", "log.txt", "metrics.parquet"} <= files


def test_off_is_a_no_op_and_bad_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert type(open_tracker("", "", Path("anything"))) is Tracker
    with pytest.raises(UsageError, match="unknown tracking 'mlfow'"):
        check_tracking("mlfow")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UsageError, match=r"pip install 'ncrobust\[track\]'"):
        check_tracking("mlflow", installed=True)
