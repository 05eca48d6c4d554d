"""Checkpoints as single safetensors files: weights, optimizer state and RNG, no pickle.

A checkpoint holds the model's state dict under ``model.``, the SGD momentum buffers under
``optim.<index>.<name>`` (parameters indexed in ``model.parameters()`` order), the global
CPU RNG state (``rng.cpu``), every CUDA device's (``rng.cuda.<index>``), and JSON metadata
(epoch, format, optimizer hyper-parameters, the run's identity and a SHA-256 checksum of all
of it). Loading never unpickles anything, and a
truncated, corrupt or foreign file gives one clear error naming it. Checkpoints of the first
format (no checksum) are still read, with a warning that their content cannot be verified.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ncrobust.atomic import atomic_write_bytes
from ncrobust.config import TrainConfig
from ncrobust.data import ImageDataset
from ncrobust.errors import UsageError
from ncrobust.models import TappedClassifier, create_model

FORMAT = "ncrobust-checkpoint-2"  # adds the checksum and the run's identity
LEGACY_FORMATS = ("ncrobust-checkpoint-1",)  # no checksum: accepted with a warning
LAST = "last.safetensors"
IDENTITY_KEYS = ("model", "dataset", "num_classes", "in_channels", "image_size")
OPTIMIZER_STATE = ("momentum_buffer",)  # the per-parameter state SGD keeps


def epoch_name(epoch: int) -> str:
    """File name of the kept checkpoint of ``epoch``."""
    return f"epoch-{epoch:04d}.safetensors"


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors on the CPU plus its metadata."""

    epoch: int
    model_state: dict[str, torch.Tensor]
    optimizer_tensors: dict[str, torch.Tensor]
    optimizer_groups: list[dict[str, Any]]
    rng_state: torch.Tensor | None
    metadata: dict[str, Any]
    identity: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    verified: bool = True  # False for a legacy checkpoint without a checksum
    cuda_rng_states: list[torch.Tensor] = field(default_factory=list)  # per CUDA device

    def check_identity(self, expected: dict[str, Any]) -> None:
        """Refuse a checkpoint written for another model, data set or class count, or (when
        ``expected`` names a run id) by another run, even one of the same model and data."""
        wrong = [
            f"{key} {self.identity[key]} (this run: {expected[key]})"
            for key in IDENTITY_KEYS
            if key in self.identity and key in expected and self.identity[key] != str(expected[key])
        ]
        run_id = expected.get("run_id")
        if run_id and self.identity.get("run_id") != run_id:
            wrong.append(f"run id {self.identity.get('run_id') or 'none'} (this run: {run_id})")
        if wrong:
            raise UsageError(f"checkpoint {self.path} belongs to another run: {'; '.join(wrong)}")

    def check_epoch(self, epochs: int) -> None:
        """Refuse an epoch outside ``[0, epochs]``."""
        if not 0 <= self.epoch <= epochs:
            raise UsageError(
                f"checkpoint {self.path} claims epoch {self.epoch}, outside this run's "
                f"[0, {epochs}]"
            )


def checksum(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over the metadata (less the checksum itself) and every tensor's name, dtype,
    shape and bytes, in name order: any flipped byte of the file's content changes it."""
    digest = hashlib.sha256()
    meta = {k: v for k, v in metadata.items() if k != "checksum"}
    digest.update(json.dumps(meta, sort_keys=True).encode("utf-8"))
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"\0{name}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    epoch: int,
    extra: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
) -> None:
    """Write ``model`` (and ``optimizer``) at ``epoch`` to ``path`` atomically.

    ``identity`` (model, dataset, num_classes, in_channels, image_size and the run's id) is
    stored so that a checkpoint cannot be resumed or measured by another run; a checksum
    covers everything.
    """
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
    }
    groups: list[dict[str, Any]] = []
    if optimizer is not None:
        index = {id(p): i for i, p in enumerate(model.parameters())}
        for group in optimizer.param_groups:
            groups.append({k: v for k, v in group.items() if k != "params"})
            groups[-1]["params"] = [index[id(p)] for p in group["params"]]
        for param, state in optimizer.state.items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    key = f"optim.{index[id(param)]}.{name}"
                    tensors[key] = value.detach().to("cpu").contiguous()
    on_cuda = any(t.is_cuda for t in itertools.chain(model.parameters(), model.buffers()))
    tensors.update(rng_tensors(cuda=on_cuda))
    metadata = {
        "format": FORMAT,
        "epoch": str(epoch),
        "optimizer_groups": json.dumps(groups),
        "extra": json.dumps(extra or {}),
        "identity": json.dumps({k: str(v) for k, v in (identity or {}).items()}),
    }
    metadata["checksum"] = checksum(tensors, metadata)
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, refusing anything else.

    Every problem (missing, truncated, flipped byte, damaged metadata, foreign file) is one
    :class:`~ncrobust.errors.UsageError` naming the file and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read checkpoint {path}: {exc.strerror}") from exc
    try:
        tensors = st_load(data)
        metadata = _metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"checkpoint {path} is truncated or not a safetensors file ({exc})"
        ) from exc
    fmt = metadata.get("format")
    if fmt != FORMAT and fmt not in LEGACY_FORMATS:
        raise UsageError(f"{path} is not an ncrobust checkpoint (format {fmt!r})")
    verified = fmt == FORMAT
    if verified:
        if "checksum" not in metadata:
            raise UsageError(f"checkpoint {path} has no checksum: it is damaged")
        if checksum(tensors, metadata) != metadata["checksum"]:
            raise UsageError(
                f"checkpoint {path} is corrupt: its content does not match its checksum"
            )
    else:
        print(
            f"warning: checkpoint {path} predates checksums ({fmt}); its content is not verified",
            file=sys.stderr,
        )
    try:
        epoch = int(metadata["epoch"])
        groups = json.loads(metadata.get("optimizer_groups", "[]"))
        extra = json.loads(metadata.get("extra", "{}"))
        identity = json.loads(metadata.get("identity", "{}"))
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            raise ValueError("optimizer_groups is not a list of mappings")
        if not isinstance(identity, dict) or not isinstance(extra, dict):
            raise ValueError("identity or extra is not a mapping")
    except (KeyError, ValueError) as exc:
        raise UsageError(f"checkpoint {path} has damaged metadata ({exc})") from exc
    if epoch < 0:
        raise UsageError(f"checkpoint {path} claims epoch {epoch}, which is negative")
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    optim = {k[len("optim.") :]: v for k, v in tensors.items() if k.startswith("optim.")}
    return Checkpoint(
        epoch,
        model_state,
        optim,
        groups,
        tensors.get("rng.cpu"),
        extra,
        {str(k): str(v) for k, v in identity.items()},
        path,
        verified,
        _cuda_states(tensors, path),
    )


CUDA_RNG_PREFIX = "rng.cuda."


def rng_tensors(cuda: bool = True) -> dict[str, torch.Tensor]:
    """Every global random state a run draws from: the CPU generator and, for a model on CUDA
    (``cuda``), each CUDA device's; a CPU run's checkpoint is the same with or without a GPU.

    The data pipeline and the views own no generator that lives across epochs (each epoch's
    shuffle, augmentation, attack starts and noise come from generators seeded by
    ``derive_seed(seed, purpose, epoch)``), so these are all the states a resume needs.
    Older checkpoints hold only ``rng.cpu``; the CUDA entries are an addition.
    """
    tensors = {"rng.cpu": torch.get_rng_state()}
    if cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{CUDA_RNG_PREFIX}{index}"] = state
    return tensors


def _cuda_states(tensors: dict[str, torch.Tensor], path: Path) -> list[torch.Tensor]:
    """The ``rng.cuda.<index>`` states in device order (contiguous indices from 0)."""
    found = {
        k[len(CUDA_RNG_PREFIX) :]: v for k, v in tensors.items() if k.startswith(CUDA_RNG_PREFIX)
    }
    states = []
    for index in range(len(found)):
        state = found.get(str(index))
        if state is None or state.dtype != torch.uint8 or state.dim() != 1:
            raise UsageError(f"checkpoint {path} has a malformed CUDA RNG state list")
        states.append(state)
    return states


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors byte string (its JSON header)."""
    if len(data) < 8:
        raise ValueError("file shorter than a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("header runs past the end of the file")
    header = json.loads(data[8 : 8 + size])
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a mapping")
    return {str(k): str(v) for k, v in meta.items()}


def restore(
    checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Load weights (strictly) and, when given, the optimizer's state, hyper-parameters and RNG.

    Everything is checked before anything is changed: a bad optimizer index, state name or
    shape, or a malformed RNG state is refused with the file named.
    """
    where = f"checkpoint {checkpoint.path}" if checkpoint.path else "checkpoint"
    params = list(model.parameters())
    if optimizer is not None:
        _check_optimizer(checkpoint, optimizer, params, where)
        _check_rng(checkpoint, where)
    try:
        model.load_state_dict(checkpoint.model_state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:4]) or first[0]
        raise UsageError(f"{where} does not fit this model: {detail}") from None
    if optimizer is None:
        return
    for group, saved in zip(optimizer.param_groups, checkpoint.optimizer_groups, strict=True):
        for key, value in saved.items():
            if key != "params":
                group[key] = value
    optimizer.state.clear()
    for key, value in checkpoint.optimizer_tensors.items():
        index, _, name = key.partition(".")
        param = params[int(index)]
        optimizer.state[param][name] = value.to(param.device)
    if checkpoint.rng_state is not None:
        torch.set_rng_state(checkpoint.rng_state)
    restore_cuda_rng(checkpoint.cuda_rng_states)


def restore_cuda_rng(states: Sequence[torch.Tensor]) -> None:
    """Set each present CUDA device's generator from ``states`` (device order); states of
    devices this machine lacks are not used (a run resumed on fewer GPUs or on the CPU)."""
    if not states or not torch.cuda.is_available():
        return
    for index, state in enumerate(states[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(state, index)


def _check_optimizer(
    checkpoint: Checkpoint,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    where: str,
) -> None:
    if len(checkpoint.optimizer_groups) != len(optimizer.param_groups):
        raise UsageError(
            f"{where}: {len(checkpoint.optimizer_groups)} optimizer group(s), this run has "
            f"{len(optimizer.param_groups)}"
        )
    for saved, group in zip(checkpoint.optimizer_groups, optimizer.param_groups, strict=True):
        indices = saved.get("params")
        expected = [next(i for i, p in enumerate(params) if p is q) for q in group["params"]]
        if indices != expected:
            raise UsageError(f"{where}: optimizer parameter indices do not match this model")
        for key, value in saved.items():
            numbers = isinstance(value, int | float) and isinstance(group.get(key), int | float)
            mismatch = key != "params" and key in group and type(value) is not type(group[key])
            if mismatch and not numbers:
                raise UsageError(f"{where}: optimizer setting {key}={value!r} is malformed")
    for key, value in checkpoint.optimizer_tensors.items():
        index, _, name = key.partition(".")
        if not index.isdigit() or int(index) >= len(params):
            raise UsageError(
                f"{where}: optimizer state 'optim.{key}' names parameter {index}, this model has "
                f"{len(params)}"
            )
        if name not in OPTIMIZER_STATE:
            raise UsageError(f"{where}: unknown optimizer state 'optim.{key}'")
        if value.shape != params[int(index)].shape:
            raise UsageError(
                f"{where}: optimizer state 'optim.{key}' has shape {list(value.shape)}, its "
                f"parameter {list(params[int(index)].shape)}"
            )


def _check_rng(checkpoint: Checkpoint, where: str) -> None:
    state = checkpoint.rng_state
    if state is None:
        return
    reference = torch.get_rng_state()
    if state.dtype != reference.dtype or state.shape != reference.shape:
        raise UsageError(
            f"{where}: the RNG state is malformed ({state.dtype}, {list(state.shape)} instead "
            f"of {reference.dtype}, {list(reference.shape)})"
        )
    current = torch.get_rng_state()
    try:
        torch.set_rng_state(state)
    except RuntimeError as exc:
        raise UsageError(f"{where}: the RNG state is invalid ({exc})") from None
    finally:
        torch.set_rng_state(current)


# -- which model and which files belong to a run --------------------------------------


def run_identity(config: TrainConfig, dataset: ImageDataset) -> dict[str, Any]:
    """What a checkpoint must match to belong to this run (stored in its metadata)."""
    return {
        "model": config.model,
        "dataset": config.dataset,
        "num_classes": dataset.num_classes,
        "in_channels": dataset.channels,
        "image_size": dataset.image_size,
    }


def build_model(config: TrainConfig, dataset: ImageDataset) -> TappedClassifier:
    """The run's model, shaped for ``dataset`` and normalising with its constants."""
    return create_model(
        config.model,
        num_classes=dataset.num_classes,
        in_channels=dataset.channels,
        image_size=dataset.image_size,
        mean=dataset.mean,
        std=dataset.std,
    )


def kept_checkpoints(folder: Path, which: str) -> list[Path]:
    """The checkpoint files in ``folder`` named by ``which`` (last, all, or a list of epochs)."""
    folder = Path(folder)
    kept = {
        int(m.group(1)): p
        for p in folder.glob("epoch-*.safetensors")
        if (m := re.fullmatch(r"epoch-(\d+)\.safetensors", p.name))
    }
    if which == "all":
        if not kept:
            raise UsageError(f"{folder} holds no kept checkpoints")
        return [kept[e] for e in sorted(kept)]
    if which == "last":
        if not (folder / LAST).is_file():
            raise UsageError(f"{folder} holds no checkpoint")
        return [folder / LAST]
    try:
        wanted = [int(e) for e in which.split(",") if e.strip()]
    except ValueError as exc:
        raise UsageError(f"--epochs expects last, all or integers, got {which!r}") from exc
    missing = [e for e in wanted if e not in kept]
    if missing:
        raise UsageError(f"no kept checkpoint for epoch(s) {missing} (kept: {sorted(kept)})")
    return [kept[e] for e in wanted]
