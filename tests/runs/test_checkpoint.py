"""Checkpoints: exact round trip of weights, optimizer and RNG; clear errors for bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ncrobust.errors import UsageError
from ncrobust.models import create_model
from ncrobust.runs.checkpoint import load_checkpoint, restore, save_checkpoint


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


class _Marker:
    """A pickle payload that leaves a file behind if anything ever unpickles it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.path, "code ran"))


def test_pickle_payload_is_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "evil.safetensors"
    marker = tmp_path / "marker"
    path.write_bytes(pickle.dumps({"model": _Marker(marker)}))  # under a safetensors name
    with pytest.raises(UsageError, match="is truncated or not a safetensors file"):
        load_checkpoint(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the payload does act when unpickled
    assert marker.read_text() == "code ran"


def _flip(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_byte_is_refused_as_corrupt(tmp_path: Path) -> None:
    model, optimizer = _trained(1)
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, model, optimizer, epoch=2)
    assert load_checkpoint(path).verified
    _flip(path, 1)  # in the last tensor's data: still a well-formed safetensors file
    with pytest.raises(UsageError, match=f"checkpoint {path} is corrupt"):
        load_checkpoint(path)


def test_metadata_edit_is_caught_by_the_checksum(tmp_path: Path) -> None:
    model, optimizer = _trained(1)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, optimizer, epoch=3)
    data = path.read_bytes().replace(b'"epoch":"3"', b'"epoch":"9"')
    assert data != path.read_bytes()
    path.write_bytes(data)
    with pytest.raises(UsageError, match="does not match its checksum"):
        load_checkpoint(path)


def test_identity_and_epoch_range_are_checked(tmp_path: Path) -> None:
    model, optimizer = _trained(1)
    path = tmp_path / "c.safetensors"
    identity = {"model": "small_cnn", "dataset": "digits", "num_classes": 10}
    save_checkpoint(path, model, optimizer, epoch=99, identity=identity)
    checkpoint = load_checkpoint(path)
    checkpoint.check_identity({"model": "small_cnn", "dataset": "digits", "num_classes": 10})
    with pytest.raises(UsageError, match=r"belongs to another run: dataset digits \(this run: c"):
        checkpoint.check_identity({"model": "small_cnn", "dataset": "cifar10", "num_classes": 10})
    with pytest.raises(UsageError, match=r"claims epoch 99, outside this run's \[0, 4\]"):
        checkpoint.check_epoch(4)
    save_checkpoint(path, model, optimizer, epoch=-3)
    with pytest.raises(UsageError, match="epoch -3, which is negative"):
        load_checkpoint(path)


def _resave(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Rewrite a checkpoint with ``change`` applied to its tensors, checksum recomputed."""
    from safetensors.torch import load_file, safe_open
    from safetensors.torch import save_file as save

    from ncrobust.runs.checkpoint import checksum

    with safe_open(str(path), "pt") as handle:
        metadata = dict(handle.metadata())
    tensors = load_file(str(path))
    change(tensors)
    metadata["checksum"] = checksum(tensors, metadata)
    save(tensors, str(path), metadata=metadata)


def test_bad_optimizer_index_and_rng_state_are_refused(tmp_path: Path) -> None:
    model, optimizer = _trained(1)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, optimizer, epoch=1)

    def bad_index(tensors: dict[str, torch.Tensor]) -> None:
        tensors["optim.99.momentum_buffer"] = tensors.pop("optim.0.momentum_buffer")

    _resave(path, bad_index)
    fresh, fresh_opt = _trained(0)
    with pytest.raises(UsageError, match=f"checkpoint {path}: optimizer state 'optim.99"):
        restore(load_checkpoint(path), fresh, fresh_opt)
    save_checkpoint(path, model, optimizer, epoch=1)

    def bad_rng(tensors: dict[str, torch.Tensor]) -> None:
        tensors["rng.cpu"] = tensors["rng.cpu"][:100].clone()

    _resave(path, bad_rng)
    rng = torch.get_rng_state()
    with pytest.raises(UsageError, match=f"checkpoint {path}: the RNG state is malformed"):
        restore(load_checkpoint(path), fresh, fresh_opt)
    assert torch.equal(torch.get_rng_state(), rng)  # nothing was changed


def test_legacy_checkpoint_without_checksum_loads_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ncrobust.runs.checkpoint import LEGACY_FORMATS

    model, optimizer = _trained(1)
    path = tmp_path / "old.safetensors"
    save_checkpoint(path, model, optimizer, epoch=1)

    def legacy(tensors: dict[str, torch.Tensor]) -> None:
        pass

    from safetensors.torch import load_file, safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = dict(handle.metadata())
    metadata.pop("checksum")
    metadata.pop("identity")
    metadata["format"] = LEGACY_FORMATS[0]
    save_file(load_file(str(path)), str(path), metadata=metadata)
    checkpoint = load_checkpoint(path)
    assert not checkpoint.verified and checkpoint.epoch == 1
    assert "predates checksums" in capsys.readouterr().err
    metadata["format"] = "ncrobust-checkpoint-2"  # the current format must carry a checksum
    save_file(load_file(str(path)), str(path), metadata=metadata)
    with pytest.raises(UsageError, match="has no checksum"):
        load_checkpoint(path)


def test_every_cuda_generator_is_saved_and_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a GPU the CUDA side is simulated: two devices' states are written as
    ``rng.cuda.0`` and ``rng.cuda.1`` and handed back per device on restore."""
    from ncrobust.runs import checkpoint as ckpt

    states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored: dict[int, torch.Tensor] = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # resumed on fewer GPUs
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: restored.__setitem__(i, s))
    model, optimizer = _trained(1)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, optimizer, epoch=1)  # a CPU model: its run draws on the CPU only
    assert load_checkpoint(path).cuda_rng_states == []
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))  # a CUDA model
    save_checkpoint(path, model, optimizer, epoch=1)
    monkeypatch.undo()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: restored.__setitem__(i, s))
    checkpoint = load_checkpoint(path)
    assert [s.tolist() for s in checkpoint.cuda_rng_states] == [s.tolist() for s in states]
    fresh, fresh_opt = _trained(0)
    restore(checkpoint, fresh, fresh_opt)
    assert list(restored) == [0] and torch.equal(restored[0], states[0])

    def gap(tensors: dict[str, torch.Tensor]) -> None:
        del tensors[f"{ckpt.CUDA_RNG_PREFIX}0"]

    _resave(path, gap)
    with pytest.raises(UsageError, match="malformed CUDA RNG state"):
        load_checkpoint(path)


def test_a_checkpoint_with_only_the_cpu_rng_still_loads(tmp_path: Path) -> None:
    model, optimizer = _trained(1)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, optimizer, epoch=1)

    def cpu_only(tensors: dict[str, torch.Tensor]) -> None:
        for key in [k for k in tensors if k.startswith("rng.cuda.")]:
            del tensors[key]

    _resave(path, cpu_only)
    checkpoint = load_checkpoint(path)
    assert checkpoint.cuda_rng_states == [] and checkpoint.rng_state is not None
    restore(checkpoint, *_trained(0))
