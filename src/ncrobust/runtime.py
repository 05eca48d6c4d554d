"""Device selection, seeding and mixed-precision helpers shared by training and benchmarks."""

from __future__ import annotations

import contextlib
import inspect
import os
import random
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from ncrobust.errors import UsageError

PRECISIONS = ("fp32", "bf16")  # fp32, or bf16 autocast on CUDA
COMPILE_SETTINGS = ("auto", "on", "off")  # auto: on for CUDA, off elsewhere
CUBLAS_WORKSPACE = ":4096:8"  # the cuBLAS workspace setting that makes its GEMMs repeatable


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


@contextlib.contextmanager
def determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """Hold the process in deterministic mode for the block when ``enabled``: deterministic
    algorithms only (an op without one raises), cuDNN autotuning off and cuBLAS's fixed
    workspace; otherwise let cuDNN pick its fastest kernels on CUDA (fixed shapes). The
    previous settings come back afterwards."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[1:]


def compile_wanted(setting: str, device: torch.device) -> bool:
    """Whether ``--compile`` (auto/on/off) asks for torch.compile on ``device``."""
    if setting not in COMPILE_SETTINGS:
        raise UsageError(f"unknown compile setting {setting!r} (use {', '.join(COMPILE_SETTINGS)})")
    return setting == "on" or (setting == "auto" and device.type == "cuda")


class Compiled(torch.nn.Module):
    """``module`` called through ``torch.compile``, with the same parameters, buffers and
    modes; where compilation is unavailable or fails, it says so once and runs ``module``
    eagerly from then on (the results are the same either way, only the speed differs).

    Only compilation failures (dynamo's exceptions) fall back; an error of the computation
    itself propagates as it would without compilation.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        backend: str | Callable[..., Any] = "inductor",
        report: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.report = report or (lambda line: print(line, file=sys.stderr))
        self.eager = not _dynamo_supported()
        self.compiled: Any = None
        if self.eager:
            self.report("torch.compile is not available here: running eagerly")
        else:
            self.compiled = torch.compile(module, backend=backend)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.eager:
            from torch._dynamo.exc import TorchDynamoException

            try:
                return self.compiled(*args, **kwargs)
            except TorchDynamoException as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self.report(f"torch.compile failed ({first[:200]}): running eagerly")
                self.eager = True
        return self.module(*args, **kwargs)


def _dynamo_supported() -> bool:
    try:
        import torch._dynamo

        return bool(torch._dynamo.is_dynamo_supported())
    except Exception:  # any failure to import means no compilation
        return False


@contextlib.contextmanager
def frozen_parameters(model: torch.nn.Module) -> Iterator[None]:
    """Parameters that do not require grad for the block (an attack differentiates only its
    input: no weight-gradient buffers, and autograd saves less); restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def make_sgd(
    params: Iterable[torch.nn.Parameter],
    device: torch.device,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> torch.optim.SGD:
    """SGD with one fused kernel per step on CUDA (foreach where fused is unavailable), the
    reference per-parameter loop on the CPU; the update rule is the same."""
    options: dict[str, Any] = {}
    if device.type == "cuda":
        fused = "fused" in inspect.signature(torch.optim.SGD).parameters
        options = {"fused": True} if fused else {"foreach": True}
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **options)
