"""The training step's execution options: torch.compile with a clean fallback, frozen
parameters during the attack, the optimizer, and the deterministic mode (CPU paths)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from ncrobust.cli import main
from ncrobust.config import TrainConfig, build_config
from ncrobust.errors import UsageError
from ncrobust.models import create_model
from ncrobust.runs.directory import RunDirectory
from ncrobust.runtime import Compiled, compile_wanted, determinism, frozen_parameters, make_sgd
from ncrobust.training.objectives import objective_step
from ncrobust.training.trainer import prepare

TIMINGS = {"seconds", "measure_seconds"}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", num_classes=10, in_channels=1, image_size=8)


def _failing_backend(gm: Any, example_inputs: Any) -> Any:
    raise RuntimeError("no compiler on this machine")


def test_compile_failure_falls_back_to_eager_once_with_the_same_result() -> None:
    model, lines = _model(), []
    x = torch.rand(4, 1, 8, 8)
    wrapped = Compiled(model, backend=_failing_backend, report=lines.append)
    assert torch.equal(wrapped(x), model(x))
    assert torch.equal(wrapped(x), model(x))
    assert len(lines) == 1 and "torch.compile failed" in lines[0] and "running eagerly" in lines[0]
    assert wrapped.eager


def test_an_error_of_the_computation_is_not_hidden_by_the_fallback() -> None:
    lines: list[str] = []
    wrapped = Compiled(_model(), backend="eager", report=lines.append)
    with pytest.raises(ValueError, match="expected input of shape"):
        wrapped(torch.rand(4, 3, 8, 8))  # wrong channel count: the model's own error
    assert not wrapped.eager and not lines  # still compiled, nothing reported


@pytest.mark.parametrize("mode", ["at", "trades"])
def test_a_compiled_step_equals_the_eager_step(mode: str) -> None:
    """The same objective, attack and SGD step through torch.compile (dynamo's graph, run by
    the eager backend on the CPU) gives bitwise the same parameters."""
    config = TrainConfig(mode=mode, eps=0.15, alpha=0.05, steps=2)
    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    results = []
    for compiled in (False, True):
        model = _model().train()
        optimizer = make_sgd(model.parameters(), torch.device("cpu"), lr=0.1, momentum=0.9,
                             weight_decay=5e-4)  # fmt: skip
        step = Compiled(model, backend="eager") if compiled else model
        for _ in range(2):
            generator = torch.Generator().manual_seed(3)
            out = objective_step(step, x, y, config, generator, attack_model=step)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
        results.append([p.detach().clone() for p in model.parameters()])
        assert all(p.requires_grad for p in model.parameters())  # the attack restored them
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_parameters_are_frozen_only_during_the_attack() -> None:
    model = _model()
    next(model.parameters()).requires_grad_(False)  # one parameter the caller froze stays so
    before = [p.requires_grad for p in model.parameters()]
    with frozen_parameters(model):
        assert not any(p.requires_grad for p in model.parameters())
        x = torch.rand(2, 1, 8, 8, requires_grad=True)
        (grad,) = torch.autograd.grad(model(x).sum(), x)
        assert grad.shape == x.shape and all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == before


def test_compile_setting_resolves_per_device_and_bad_values_are_refused() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not compile_wanted("auto", cpu) and compile_wanted("auto", cuda)
    assert compile_wanted("on", cpu) and not compile_wanted("off", cuda)
    assert build_config(overrides={"compile": True}).compile == "on"
    assert build_config(overrides={"compile": "false"}).compile == "off"
    with pytest.raises(UsageError, match="unknown compile setting 'sometimes'"):
        build_config(overrides={"compile": "sometimes"})


def test_the_trainer_trains_through_the_compiled_model_only_when_asked(tmp_path: Path) -> None:
    for setting, expect in (("auto", False), ("on", True), ("off", False)):
        config = build_config(
            overrides={"device": "cpu", "compile": setting, "out": str(tmp_path / setting)}
        )
        session = prepare(config, progress=False)
        try:
            assert isinstance(session.trained, Compiled) is expect
            assert isinstance(session.attacker, Compiled) is expect
            assert (session.compiled is None) is not expect
        finally:
            assert session.claim is not None
            session.claim.abandon()


def test_deterministic_mode_is_held_for_the_run_and_restored() -> None:
    cpu = torch.device("cpu")
    assert not torch.are_deterministic_algorithms_enabled()
    with determinism(True, cpu):
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_cli_run_gives_the_cpu_table_of_a_plain_run(tmp_path: Path) -> None:
    """On the CPU the deterministic mode changes no bit of the table."""
    common = [
        "train", "--dataset", "digits", "--model", "small_cnn", "--mode", "st", "--steps", "1",
        "--epochs", "1", "--views", "clean", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--out", str(tmp_path / "det"), "--deterministic"]) == 0

    def table(name: str) -> pd.DataFrame:
        frame = RunDirectory(tmp_path / name).read_metrics()
        return frame[~frame.metric.isin(TIMINGS)].reset_index(drop=True)

    pd.testing.assert_frame_equal(table("plain"), table("det"))
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_config_written_before_the_execution_fields_still_reads(tmp_path: Path) -> None:
    import yaml

    from ncrobust.config import read_config

    data = build_config(overrides={"out": str(tmp_path / "run")}).to_dict()
    del data["compile"], data["deterministic"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))  # no checksum header: every other field is needed
    config = read_config(path)
    assert config.compile == "auto" and config.deterministic is False
    del data["epochs"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UsageError, match="lacks epochs"):
        read_config(path)
