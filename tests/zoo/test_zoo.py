"""``ncrobust zoo`` offline: a model directory laid out as the zoo expects, holding small
checkpoints of an architecture the zoo defines (random weights), measured end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

if importlib.util.find_spec("robustbench") is None:
    pytest.skip("the zoo extra (robustbench) is not installed", allow_module_level=True)

from ncrobust.cli import main
from ncrobust.zoo import catalog

from ..experiments.test_sweep_cluster import _run_cluster, slurm  # noqa: F401 - a fixture
from ..probing.conftest import one_thread  # noqa: F401 - the autouse fixture

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
try:
    import tiny_zoo  # a job's own process imports it by this name
finally:
    sys.path.remove(str(HERE))

NAMES = tiny_zoo.NAMES
_tiny = tiny_zoo.tiny


@pytest.fixture
def zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three tiny entries registered in the zoo's cifar10/Linf registry, their checkpoints and
    two leaderboard entries written under ``tmp_path/models`` in the zoo's layout."""
    registry = tiny_zoo.registry()
    folder = tmp_path / "models" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    for index, name in enumerate(NAMES):
        monkeypatch.setitem(registry, name, {"model": _tiny, "gdrive_id": "offline"})
        torch.manual_seed(index)
        torch.save({"state_dict": _tiny().state_dict()}, folder / f"{name}.pt")
    for name, clean, robust in (("TinyZooA", "80.5", "50.25"), ("TinyZooB", "70", "40")):
        info = {"name": f"paper of {name}", "architecture": "WideResNet-10-1",
                "additional_data": False, "clean_acc": clean, "autoattack_acc": robust}  # fmt: skip
        (folder / f"{name}.json").write_text(json.dumps(info))
    return tmp_path


def _args(root: Path, *extra: str) -> list[str]:
    return ["zoo", "--dataset", "cifar10", "--threat", "Linf", "--model-dir",
            str(root / "models"), "--out", str(root / "out"), "--data", "synthetic",
            "--points", "20", "--steps", "1", "--attack", "pgd:steps=2", "--pool", "2",
            "--batch-size", "64", *extra]  # fmt: skip


def test_zoo_end_to_end_offline(zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_args(zoo, "--models", ",".join(NAMES))) == 0
    out = zoo / "out"
    for name in NAMES:
        run = out / name
        metrics = pd.read_parquet(run / "metrics.parquet")
        assert set(metrics.view) == {"clean", "pgd", "gaussian", "targeted"}
        assert {"penultimate", "conv1", "block1", "block2", "block3"} <= set(metrics.layer)
        robust = pd.read_parquet(run / "robustness.parquet")
        assert "pgd:steps=2:restarts=1" in set(robust.attack)
        assert (run / "DONE").is_file()
    zoo_rows = pd.read_parquet(out / "TinyZooA" / "robustness.parquet")
    zoo_rows = zoo_rows[zoo_rows.attack.str.endswith("@zoo")].set_index("attack").value
    expected = {"clean@zoo": 0.805, "leaderboard:autoattack@zoo": 0.5025}
    assert zoo_rows.to_dict() == pytest.approx(expected)
    table = pd.read_parquet(out / "zoo_summary.parquet")
    assert list(table.model) == NAMES
    assert list(table.robust_source) == ["zoo AutoAttack", "zoo AutoAttack", "own attack"]
    assert table.loc[0, "robust_accuracy"] == pytest.approx(0.5025)
    assert table.nc1_clean.gt(0).all() and table.best_early_ncc_pgd.between(0, 1).all()
    report = (out / "zoo_report.md").read_text()
    assert "## Model zoo" in report and all(n in report for n in NAMES)
    assert (out / "zoo_correlations.png").stat().st_size > 0

    from ncrobust.study.loading import load_runs

    runs = load_runs([out])
    assert sorted(r.config.model for r in runs) == NAMES
    assert all(not r.metrics.empty for r in runs)

    # the model directories read as runs by report and plot --where
    assert main(["report", str(out), "--out", str(zoo / "report"), "--figures", "none"]) == 0
    # with the "Model zoo" section: one row per model, the correlations and the findings
    text = (zoo / "report" / "report.md").read_text()
    section = text[text.index("## Model zoo") : text.index("## Figures")]
    assert all(f"| {name} |" in section for name in NAMES)
    assert "| nc1_clean | 3 |" in section and "### Findings across defenses" in section
    assert "over 3 models" in section and "- [Model zoo](#model-zoo)" in text
    page = (zoo / "report" / "report.html").read_text()
    assert "<h2 id='model-zoo'>Model zoo</h2>" in page and "TinyZooC" in page
    assert main(["report", str(out), "--out", str(zoo / "drawn"), "--figures", "fig2"]) == 0
    assert "](figures/zoo_correlations.png)" in (zoo / "drawn" / "report.md").read_text()
    assert (zoo / "drawn" / "figures" / "zoo_correlations.png").stat().st_size > 0
    assert main(["plot", str(out), "--where", "model=TinyZooB", "--figures", "fig2",
                 "--formats", "png", "--out", str(zoo / "figures")]) == 0  # fmt: skip
    assert (zoo / "figures" / "fig2.png").is_file()

    # a second call finds every model done and only rewrites the summary
    capsys.readouterr()
    assert main(_args(zoo, "--models", ",".join(NAMES))) == 0
    assert capsys.readouterr().out.count("done, skipped") == 3


def test_loader_asked_for_exactly_the_names_given(
    zoo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    utils = catalog.require_robustbench()
    calls: list[tuple[str, str, str, str]] = []

    def recording(model_name: str, model_dir: str, dataset: str, threat_model: str) -> object:
        calls.append((model_name, model_dir, dataset, threat_model))
        return _tiny()

    monkeypatch.setattr(utils, "load_model", recording)
    assert main(_args(zoo, "--models", "TinyZooC,TinyZooA")) == 0
    folder = str(zoo / "models")
    assert calls == [(name, folder, "cifar10", "Linf") for name in ("TinyZooC", "TinyZooA")]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--models", "NoSuchModel2099"], "not in the zoo's cifar10/Linf models: NoSuchModel2099"),
        (["--models", "TinyZooA", "--top", "2"], "exactly one of --models"),
        (["--models", "TinyZooA", "--points", "3"], "--points must be >= 10"),
        (["--models", "TinyZooA", "--attack", "fgsm"], "attack"),
        (["--models", "TinyZooA", "--partition", "gpu"], "--partition applies to --executor slurm"),
        (["--models", "TinyZooA", "--executor", "local", "--gpus-per-run", "2"], "one GPU, got 2"),
    ],
)
def test_bad_input_refused_before_loading(
    zoo: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(zoo, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (zoo / "out").exists()


def test_dry_run_lists_models_and_cost(zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_args(zoo, "--top", "2", "--dry-run")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "passes" in lines[0] and "to measure" in lines[0]
    assert not (zoo / "out").exists()


def test_rank_correlations_and_findings() -> None:
    from scipy.stats import spearmanr

    from ncrobust.study.zoo_summary import ROBUST, STATISTICS, correlations, finding, spearman

    rng = torch.Generator().manual_seed(0)
    x, y = torch.rand(12, generator=rng).numpy(), torch.rand(12, generator=rng).numpy()
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    robust = [0.1, 0.2, 0.3, 0.4, 0.5]
    ranks = [1.0, 2.0, 3.0, 4.0, 5.0]
    table = pd.DataFrame({name: ranks for name in STATISTICS} | {ROBUST: robust})
    table["nc1_clean"] = [5.0, 4.0, 3.0, 2.0, 1.0]  # falls as robustness rises
    table["best_early_ncc_pgd"] = 0.5  # the same for every model
    corr = correlations(table).set_index("statistic")
    assert corr.loc["nc1_clean", "spearman"] == pytest.approx(-1.0)
    assert corr.loc["simplex_pgd", ["spearman", "low", "high"]].tolist() == pytest.approx([1, 1, 1])
    assert "falls with robust accuracy" in finding(corr.loc["nc1_clean"])
    assert "rises with robust accuracy" in finding(corr.loc["simplex_pgd"])
    assert "the same for all 5 models" in finding(corr.loc["best_early_ncc_pgd"])
    assert "too few" in finding(correlations(table.head(2)).iloc[0])


def test_family_taps_follow_the_zoo_class_hierarchy() -> None:
    catalog.require_robustbench()
    from robustbench.model_zoo.architectures.dm_wide_resnet import DMPreActResNet, DMWideResNet
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    class Paper2099Net(WideResNet):  # the zoo subclasses architectures per paper
        pass

    paper = Paper2099Net(depth=10, widen_factor=1)
    assert catalog.family(paper) == "WideResNet"
    assert catalog.family_taps(paper) == ["conv1", "block1", "block2", "block3"]
    dm = DMWideResNet(num_classes=10, depth=10, width=1)
    assert catalog.family_taps(dm) == ["init_conv", "layer.0", "layer.1", "layer.2"]
    preact = DMPreActResNet(num_classes=10, depth=18)
    assert catalog.family_taps(preact) == ["conv_2d", "layer_0", "layer_1", "layer_2", "layer_3"]
    assert catalog.family_taps(torch.nn.Linear(2, 2)) == []


def test_a_model_that_cannot_be_loaded_is_named_and_left_out(
    zoo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (zoo / "models" / "cifar10" / "Linf" / "TinyZooB.pt").unlink()
    utils = catalog.require_robustbench()
    real = utils.load_model

    def offline(model_name: str, **kwargs: object) -> object:
        if model_name == "TinyZooB":
            raise OSError("no network to download the checkpoint")
        return real(model_name, **kwargs)

    monkeypatch.setattr(utils, "load_model", offline)
    assert main(_args(zoo, "--models", "TinyZooA,TinyZooB")) == 1
    err = capsys.readouterr().err
    assert "cannot load zoo model cifar10/Linf/TinyZooB" in err and "not measured: TinyZooB" in err
    table = pd.read_parquet(zoo / "out" / "zoo_summary.parquet")
    assert list(table.model) == ["TinyZooA"]


@pytest.fixture
def tiny_jobs(zoo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Zoo jobs that register the tiny entries in their own process first."""
    pytest.importorskip("submitit")
    from ncrobust.zoo import job

    monkeypatch.setattr(job, "ZooJob", tiny_zoo.TinyZooJob)
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return zoo


def test_each_model_one_local_job(tiny_jobs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--executor local: each model is one submitit job that records its outcome; the summary
    follows, and a second call skips the finished models without starting a job."""
    zoo = tiny_jobs
    names = ["TinyZooA", "TinyZooC"]
    assert main(_args(zoo, "--models", ",".join(names), "--executor", "local")) == 0
    out = zoo / "out"
    for name in names:
        outcome = json.loads((out / name / "jobs" / "outcome.json").read_text())
        assert (outcome["state"], outcome["result"]) == ("success", "measured")
        assert (out / name / "DONE").is_file()
        assert set(pd.read_parquet(out / name / "metrics.parquet").view) >= {"clean", "pgd"}
    assert list(pd.read_parquet(out / "zoo_summary.parquet").model) == names
    assert capsys.readouterr().out.count("started (local job") == 2
    assert main(_args(zoo, "--models", ",".join(names), "--executor", "local")) == 0
    printed = capsys.readouterr().out
    assert printed.count("done, skipped") == 2 and "started" not in printed


def test_each_model_one_task_of_a_slurm_array(
    tiny_jobs: Path,
    slurm: Path,  # noqa: F811 - the fixture imported above
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--executor slurm (a stand-in for SLURM's commands): one job array, a task per model
    claimed in its directory; once the tasks ran, the same command summarises."""
    zoo, state = tiny_jobs, slurm
    names = ["TinyZooA", "TinyZooB"]
    args = _args(zoo, "--models", ",".join(names), "--executor", "slurm", "--partition", "gpu")
    assert main(args) == 0
    assert "submitted 2 model(s)" in capsys.readouterr().out
    submissions = json.loads((state / "state.json").read_text())["submissions"]
    assert len(submissions) == 1 and submissions[0]["options"]["array"] == "0-1%2"
    claims = [json.loads((zoo / "out" / n / "job.json").read_text())["job_id"] for n in names]
    assert sorted(claims) == [f"{submissions[0]['job']}_{i}" for i in range(2)]
    assert not (zoo / "out" / "zoo_summary.parquet").exists()
    assert main(args) == 0  # the queued tasks are left alone, not submitted again
    assert capsys.readouterr().out.count("queued in a job of an earlier call") == 2
    assert len(json.loads((state / "state.json").read_text())["submissions"]) == 1
    _run_cluster(state)
    assert main(args) == 0
    assert capsys.readouterr().out.count("done, skipped") == 2
    assert list(pd.read_parquet(zoo / "out" / "zoo_summary.parquet").model) == names
