"""Device selection, seeding and mixed-precision helpers shared by training and benchmarks."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from ncrobust.errors import UsageError

PRECISIONS = ("fp32", "bf16")  # fp32, or bf16 autocast on CUDA


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` to a usable device, refusing absent ones."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"device {name!r} does not exist ({torch.cuda.device_count()} GPUs)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device 'mps' requested but MPS is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run is reproducible."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - libraries that draw from the legacy RNG
    torch.manual_seed(seed)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on CUDA when ``precision == 'bf16'``; a no-op context otherwise."""
    if precision not in ("fp32", "bf16"):
        raise UsageError(f"unknown precision {precision!r} (use fp32 or bf16)")
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` in eval mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
