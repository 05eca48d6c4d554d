"""measure: equals training-time measurement; layerwise taps; any nn.Module via hooks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from ncrobust.cli import main
from ncrobust.collapse import collapse_metrics
from ncrobust.data import synthetic_dataset
from ncrobust.models import create_model
from ncrobust.probing.measure import AttackSettings, measure
from ncrobust.runs.directory import RunDirectory

KEYS = ["epoch", "split", "view", "layer", "metric"]


def test_checkpoint_measurement_equals_training_time(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--preset", "digits", "--epochs", "2", "--measure-every", "1",
            "--steps", "2", "--views", "clean,pgd,gaussian,targeted", "--checkpoint-every", "1",
            "--device", "cpu", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert main(["measure", str(out), "--epochs", "1,2", "--layers", "penultimate"]) == 0
    run = RunDirectory(out)
    trained = run.read_metrics()
    trained = trained[(trained.view != "fit") & trained.epoch.isin([1, 2])]
    measured = pd.read_parquet(out / "measurements.parquet")
    merged = trained.merge(measured, on=KEYS, suffixes=("_train", "_measure"))
    assert len(merged) == len(trained) > 100  # every training-time value was re-measured
    pd.testing.assert_series_equal(merged.value_train, merged.value_measure, check_names=False)
    stats = pd.read_parquet(out / "measurement_stats.parquet")
    assert set(stats.view) == {"pgd", "gaussian", "targeted"}


def test_measure_cli_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["train", "--preset", "digits", "--epochs", "1", "--steps", "1",
                 "--device", "cpu", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    assert main(["measure", str(out), "--epochs", "7"]) == 2
    assert "no kept checkpoint for epoch(s) [7]" in capsys.readouterr().err
    assert main(["measure", str(out), "--views", "train_adv"]) == 2
    assert "recorded during training only" in capsys.readouterr().err
    assert not (out / "measurements.parquet").exists()


def test_eps_study_scales_the_step(tmp_path: Path) -> None:
    out = tmp_path / "st"
    assert main(["train", "--preset", "digits", "--epochs", "1", "--steps", "2",
                 "--device", "cpu", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    assert main(["measure", str(out), "--eps", "0.05,0.1,0.2"]) == 0
    study = pd.read_parquet(out / "eps_study.parquet")
    assert set(study.layer) == {"penultimate", "output"}  # the study's default layer
    assert sorted(study.eps.unique()) == pytest.approx([0.05, 0.1, 0.2])
    robust = study.query("split == 'test' and view == 'pgd' and metric == 'accuracy'")
    accuracy = robust.set_index("eps").value.sort_index()
    assert accuracy.is_monotonic_decreasing  # a stronger attack never helps


@pytest.mark.parametrize("name", ["vgg11_bn", "preact_resnet18"])
def test_every_layer_of_the_paper_models(name: str) -> None:
    torch.manual_seed(0)
    data = synthetic_dataset(3, (3, 32, 32), n_per_class=4, test_per_class=2, seed=0)
    model = create_model(name, num_classes=3, in_channels=3, image_size=32).eval()
    table = measure(
        model,
        data,
        layers=["all"],
        views=["clean", "pgd"],
        attack=AttackSettings(steps=1),
        batch_size=64,
    )
    assert isinstance(table, pd.DataFrame)
    layers = [layer for layer in table.layer.unique() if layer != "output"]
    assert layers == model.layers()
    for split, view in (("train", "clean"), ("train", "pgd"), ("test", "clean"), ("test", "pgd")):
        rows = table[(table.split == split) & (table.view == view)]
        for layer in layers:
            metrics = set(rows[rows.layer == layer].metric)
            assert {"nc1", "nc2_equinorm", "nc2_equiangular", "nc4"} <= metrics, (
                layer,
                split,
                view,
            )
            if (split, view) != ("train", "clean"):
                assert {"ncc_accuracy", "ncc_match"} <= metrics


class UserNet(nn.Module):
    """A model ncrobust has never seen: taps by module name through hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.embed = nn.Linear(6 * 8 * 8, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.embed(self.features(x))))


def test_any_module_through_hooks_with_pooling() -> None:
    torch.manual_seed(0)
    net = UserNet().eval()
    data = synthetic_dataset(4, (1, 8, 8), n_per_class=10, test_per_class=3, seed=1)
    with pytest.warns(UserWarning, match="mean/std are not applied"):
        table = measure(net, data, layers=["features.0", "penultimate"], views=["clean"], pool=2)
    assert isinstance(table, pd.DataFrame)
    x = data.train.images.float() / 255
    with torch.no_grad():
        conv = nn.functional.adaptive_avg_pool2d(net.features[0](x), 2).flatten(1)
        hidden = torch.relu(net.embed(net.features(x)))
        logits = net.head(hidden)
    rows = (
        table[(table.split == "train") & (table.view == "clean")]
        .set_index(["layer", "metric"])
        .value
    )
    direct = collapse_metrics(conv, data.train.labels, 4, logits=logits)
    assert rows[("features.0", "nc1")] == pytest.approx(direct["nc1"], rel=1e-6)
    head = collapse_metrics(
        hidden, data.train.labels, 4, weight=net.head.weight, bias=net.head.bias
    )
    assert rows[("penultimate", "nc3")] == pytest.approx(head["nc3"], rel=1e-6)
    assert not net.features[0]._forward_hooks  # hooks removed after every call
    assert not net.head._forward_pre_hooks
    with pytest.raises(ValueError, match="no module named 'nope'"):
        measure(net, data, layers=["nope"], normalize=(data.mean, data.std))
