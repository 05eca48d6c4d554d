"""Finding and reading run directories; the Study's lookups (layer order, perturbed view)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from ncrobust.analysis import Study, find_run_dirs, load_run
from ncrobust.errors import UsageError


def test_run_folders_are_searched_below_and_checkpoints_skipped(
    fake: ModuleType, tmp_path: Path
) -> None:
    a = fake.write_run(tmp_path / "sweep" / "cifar" / "a", "st", 1)
    b = fake.write_run(tmp_path / "sweep" / "b", "at", 1)
    (a / "checkpoints" / "epoch5").mkdir(parents=True)
    (a / "checkpoints" / "epoch5" / "config.yaml").write_text("mode: st\n")
    found = find_run_dirs([tmp_path / "sweep", b])  # b named twice: listed once
    assert sorted(found) == sorted([a, b])


def test_bad_paths_are_refused_with_the_reason(fake: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such directory"):
        find_run_dirs([tmp_path / "absent"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="not a run directory"):
        find_run_dirs([tmp_path / "empty"])
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        find_run_dirs([tmp_path / "file.txt"])
    with pytest.raises(UsageError, match="no run directories given"):
        find_run_dirs([])
    run = tmp_path / "bad"
    run.mkdir()
    (run / "config.yaml").write_text("no_such_field: 1\n")
    with pytest.raises(UsageError, match="unknown configuration key"):
        load_run(run)


def test_runs_without_rows_are_refused(fake: ModuleType, tmp_path: Path) -> None:
    fake.write_run(tmp_path / "fresh", "st", 1, metrics=[], stats=[])
    with pytest.raises(UsageError, match="no metrics recorded yet"):
        Study.from_paths([tmp_path])


def test_eps_study_is_read_and_checked(fake: ModuleType, tmp_path: Path) -> None:
    table = pd.DataFrame(
        {
            "epoch": [10],
            "eps": [2 / 255],
            "split": ["train"],
            "view": ["pgd"],
            "layer": ["penultimate"],
            "metric": ["nc1"],
            "value": [0.5],
        }
    )
    run = fake.write_run(tmp_path / "a", "st", 1, eps_study=table)
    assert load_run(run).eps_study["value"].tolist() == [0.5]
    table.drop(columns="eps").to_parquet(run / "eps_study.parquet")
    with pytest.raises(UsageError, match="missing column"):
        load_run(run)


def test_layer_order_is_depth_order_even_when_penultimate_comes_first(
    paper_study: Study, fake: ModuleType
) -> None:
    # penultimate is measured from epoch 0, the other taps only at the last epoch
    assert paper_study.layer_order("ST") == list(fake.LAYERS)
    assert paper_study.layerwise_epoch("ST") == fake.LAST
    assert paper_study.last_epoch("ST") == fake.LAST


def test_perturbed_view_follows_the_paper(paper_study: Study) -> None:
    assert paper_study.perturbed_view("ST", "train") == "pgd"
    assert paper_study.perturbed_view("AT", "train") == "train_adv"
    assert paper_study.perturbed_view("AT", "test") == "pgd"
    assert paper_study.num_classes("ST") == 4


def test_load_runs_takes_one_path_as_the_readme_writes_it(
    fake: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ncrobust.analysis import load_runs

    fake.write_run(tmp_path / "runs" / "demo" / "st", "st", 1)
    fake.write_run(tmp_path / "runs" / "demo" / "at", "at", 1)
    monkeypatch.chdir(tmp_path)
    one = load_runs("runs/demo")  # a str is one path, not a sequence of characters
    assert sorted(run.name for run in one) == ["at", "st"]
    assert [r.path for r in load_runs(Path("runs/demo"))] == [r.path for r in one]
    assert [r.path for r in load_runs(["runs/demo"])] == [r.path for r in one]
