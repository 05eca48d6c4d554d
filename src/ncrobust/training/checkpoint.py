"""Checkpoints as single safetensors files: weights, optimizer state and RNG, no pickle.

A checkpoint holds the model's state dict under ``model.``, the SGD momentum buffers under
``optim.<index>.<name>`` (parameters indexed in ``model.parameters()`` order), the global
CPU RNG state, and JSON metadata (epoch, format, optimizer hyper-parameters). Loading never
unpickles anything, and a truncated or foreign file gives one clear error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ncrobust.errors import UsageError
from ncrobust.runs import atomic_write_bytes

FORMAT = "ncrobust-checkpoint-1"
LAST = "last.safetensors"


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


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    epoch: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``model`` (and ``optimizer``) at ``epoch`` to ``path`` atomically."""
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
    tensors["rng.cpu"] = torch.get_rng_state()
    metadata = {
        "format": FORMAT,
        "epoch": str(epoch),
        "optimizer_groups": json.dumps(groups),
        "extra": json.dumps(extra or {}),
    }
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, refusing anything else."""
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        metadata = _metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"checkpoint {path} is truncated or not a safetensors file ({exc})"
        ) from exc
    if metadata.get("format") != FORMAT:
        raise UsageError(
            f"{path} is not an ncrobust checkpoint (format {metadata.get('format')!r})"
        )
    try:
        epoch = int(metadata["epoch"])
        groups = json.loads(metadata.get("optimizer_groups", "[]"))
        extra = json.loads(metadata.get("extra", "{}"))
    except (KeyError, ValueError) as exc:
        raise UsageError(f"checkpoint {path} has damaged metadata ({exc})") from exc
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    optim = {k[len("optim.") :]: v for k, v in tensors.items() if k.startswith("optim.")}
    return Checkpoint(epoch, model_state, optim, groups, tensors.get("rng.cpu"), extra)


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
    """Load weights (strictly) and, when given, the optimizer's state and hyper-parameters."""
    try:
        model.load_state_dict(checkpoint.model_state, strict=True)
    except RuntimeError as exc:
        raise UsageError(f"checkpoint does not fit this model: {exc}") from exc
    if optimizer is None:
        return
    params = list(model.parameters())
    if len(checkpoint.optimizer_groups) != len(optimizer.param_groups):
        raise UsageError("checkpoint optimizer groups do not match this run")
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
