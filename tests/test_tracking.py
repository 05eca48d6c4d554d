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


def test_a_sweep_tracks_one_run_per_grid_point_grouped_by_its_root(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from ncrobust.cli import main

    store, root = tmp_path / "store", tmp_path / "grid-a"
    settings = ["epochs=1", "steps=1", "device=cpu", "views=clean", "splits=test",
                "tracking=mlflow", f"tracking_dir={store}"]  # fmt: skip
    argv = ["sweep", "--datasets", "digits", "--models", "small_cnn", "--modes", "st",
            "--norms", "linf", "--seeds", "1,2", "--root", str(root), "--quiet"]  # fmt: skip
    assert main([*argv, *(a for s in settings for a in ("--set", s))]) == 0
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("grid-a")
    assert experiment is not None
    tracked = client.search_runs([experiment.experiment_id])
    runs = sorted(p for p in root.iterdir() if (p / "config.yaml").is_file())
    assert len(runs) == 2
    assert sorted(t.data.tags[RUN_DIR_TAG] for t in tracked) == [str(p.resolve()) for p in runs]
    assert {t.data.params["seed"] for t in tracked} == {"1", "2"}
    assert all(t.info.status == "FINISHED" for t in tracked)
