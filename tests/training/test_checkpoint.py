"""Checkpoints: exact round trip of weights, optimizer and RNG; clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ncrobust.errors import UsageError
from ncrobust.models import create_model
from ncrobust.training.checkpoint import load_checkpoint, restore, save_checkpoint


def _trained(steps: int = 3) -> tuple[torch.nn.Module, torch.optim.SGD]:
    model = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(steps):
        x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, optimizer


def test_round_trip_restores_training_exactly(tmp_path: Path) -> None:
    model, optimizer = _trained()
    optimizer.param_groups[0]["lr"] = 0.0123
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, optimizer, epoch=7)
    rng_after_save = torch.get_rng_state()
    torch.manual_seed(99)  # disturb the RNG: restore must bring the saved state back

    fresh, fresh_opt = _trained(steps=0)
    fresh_opt.param_groups[0]["lr"] = 1.0
    checkpoint = load_checkpoint(path)
    assert checkpoint.epoch == 7
    restore(checkpoint, fresh, fresh_opt)
    assert torch.equal(torch.get_rng_state(), rng_after_save)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), fresh.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert fresh_opt.param_groups[0]["lr"] == 0.0123
    # the next SGD step is identical, so training continues exactly
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for m, o in ((model, optimizer), (fresh, fresh_opt)):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        o.zero_grad()
        loss.backward()
        o.step()
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


def test_truncated_foreign_and_missing_files_are_refused(tmp_path: Path) -> None:
    model, optimizer = _trained(1)
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, model, optimizer, epoch=1)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(UsageError, match="truncated or not a safetensors file"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 3)
    with pytest.raises(UsageError, match="truncated or not a safetensors file"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(UsageError, match="not an ncrobust checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(UsageError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.safetensors")
    other = create_model("small_cnn", num_classes=3, in_channels=1, image_size=8)
    with pytest.raises(UsageError, match="does not fit this model"):
        restore(load_checkpoint(good), other)


def test_pickle_payload_is_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "evil.safetensors"
    torch.save({"model": torch.zeros(1)}, path)  # a pickle file under a safetensors name
    with pytest.raises(UsageError):
        load_checkpoint(path)
