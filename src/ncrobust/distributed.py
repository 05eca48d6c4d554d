"""One run on several processes (``torchrun``): process group, ranks, reductions, DDP wrapping.

``torchrun --nproc-per-node N -m ncrobust train ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set. :func:`setup` reads them, puts each process
on its own device (``cuda:LOCAL_RANK`` on GPUs, the CPU otherwise) and joins the process group
(NCCL on CUDA, gloo on the CPU) with a collective timeout short enough that a rank whose peer
died stops instead of waiting for half an hour. Without a launcher (or with one process)
everything here is a no-op, so the single-process path is unchanged.

BatchNorm is synchronised across ranks by :func:`wrap` (``SyncBatchNorm``: the batch statistics
of the whole global batch, as one process would compute them). ``torch.nn.SyncBatchNorm``
only runs on GPUs, so on other devices :class:`SyncBatchNorm` here does the same arithmetic
with two small all-reduces (forward: per-channel sums; backward: per-channel gradient sums).
"""

from __future__ import annotations

import inspect
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ncrobust.data.batching import shard_rows
from ncrobust.errors import UsageError
from ncrobust.runtime import resolve_device

# A collective that does not complete within this time fails (the usual cause: a peer died
# outside torchrun, whose agent otherwise stops the remaining workers at once). Long enough
# for rank 0 to write a large table and checkpoint while the others wait for it.
TIMEOUT = timedelta(minutes=10)

__all__ = [
    "TIMEOUT",
    "Context",
    "Rows",
    "SyncBatchNorm",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "convert_sync_batchnorm",
    "current",
    "describe_ranks",
    "draw_rows",
    "launch_context",
    "setup",
    "shard_rows",
    "shutdown",
    "wrap",
]


@dataclass(frozen=True)
class Context:
    """Where this process stands in its job: its rank among ``world_size`` and its local rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes the run directory."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise UsageError(f"environment variable {name}={value!r} is not an integer") from exc


def launch_context() -> Context:
    """The rank, world size and local rank a launcher (torchrun, srun + submitit) exported."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UsageError(
            f"inconsistent launch: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}"
        )
    return Context(rank, world, local)


def current() -> Context:
    """The context of the initialised process group (one process when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return Context()


def process_device(name: str, context: Context) -> torch.device:
    """This process's device for the configured ``name``: ``cuda:LOCAL_RANK`` under a launcher.

    With several processes ``auto``/``cuda`` mean the GPU of this process's local rank; a fixed
    ``cuda:N`` would put every rank on one GPU and is refused.
    """
    device = resolve_device(name)
    if not context.distributed or device.type != "cuda":
        return device
    if name not in ("auto", "cuda"):
        raise UsageError(
            f"--device {name} names one GPU, but {context.world_size} processes were launched: "
            "use --device cuda (each process takes the GPU of its LOCAL_RANK)"
        )
    if context.local_rank >= torch.cuda.device_count():
        raise UsageError(
            f"LOCAL_RANK {context.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
            "launch at most one process per GPU"
        )
    return torch.device("cuda", context.local_rank)


def setup(device_name: str) -> tuple[Context, torch.device]:
    """Join the launcher's process group (when there is more than one process) on our device.

    Idempotent: a process group that already exists is kept.
    """
    context = launch_context()
    device = process_device(device_name, context)
    if not context.distributed or dist.is_initialized():
        return context, device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    return current(), device


def shutdown(wait: bool = False) -> None:
    """Leave the process group (a no-op without one); ``wait``: first wait for every rank, so
    that rank 0, which may host the group's store, leaves last (after a failure, never wait)."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if current().distributed:
        dist.barrier()


def share(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object; ``value`` itself in one process)."""
    if not current().distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over all ranks in place and return it (unchanged in one process)."""
    if current().distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: nn.Module) -> None:
    """Give every rank rank 0's buffers (BN running statistics), e.g. before measuring."""
    if current().distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def describe_ranks(device: torch.device) -> str:
    """``rank 0: host/cuda:0, rank 1: ...`` for the log (every rank must call it)."""
    mine = f"{socket.gethostname()}/{device}"
    if not current().distributed:
        return f"rank 0: {mine}"
    everyone: list[Any] = [None] * current().world_size
    dist.all_gather_object(everyone, mine)
    return ", ".join(f"rank {rank}: {where}" for rank, where in enumerate(everyone))


# -- random draws that do not depend on the number of processes ------------------------------

# (start, stop, total): this process's rows [start, stop) of a global batch of ``total`` samples
Rows = tuple[int, int, int]


def draw_rows(like: Tensor, rows: Rows | None, fill: Callable[[Tensor], Tensor]) -> Tensor:
    """``fill`` applied to a fresh tensor for the whole global batch, then this process's rows.

    ``like`` is this process's batch (its dtype, device, memory format and per-sample shape);
    ``rows=None`` means the batch is the whole global batch. One process drawing for a batch
    of B and two drawing for their halves thus get the same numbers for the same samples.
    """
    start, stop, total = rows if rows is not None else (0, like.shape[0], like.shape[0])
    if stop - start != like.shape[0]:
        raise ValueError(f"rows {start}:{stop} do not match a batch of {like.shape[0]}")
    channels_last = (
        like.dim() == 4
        and not like.is_contiguous()
        and like.is_contiguous(memory_format=torch.channels_last)
    )
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    whole = torch.empty(
        (total, *like.shape[1:]), dtype=like.dtype, device=like.device, memory_format=fmt
    )
    return fill(whole)[start:stop]


# -- BatchNorm over the global batch -----------------------------------------------------------


class _GlobalBatchNorm(torch.autograd.Function):
    """Training-mode batch norm with statistics summed over every rank (forward and backward)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        factor: float,
        eps: float,
    ) -> Tensor:
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        x64 = x.double()
        local = torch.cat(
            [
                x64.sum(dims),
                x64.square().sum(dims),
                x64.new_tensor([x.numel() // x.shape[1]]),
            ]
        )
        dist.all_reduce(local, op=dist.ReduceOp.SUM)
        channels = x.shape[1]
        count = local[-1]
        mean = local[:channels] / count
        var = (local[channels : 2 * channels] / count - mean.square()).clamp_(min=0.0)
        invstd = (var + eps).rsqrt()
        if running_mean is not None and running_var is not None:
            unbiased = var * (count / (count - 1).clamp(min=1.0))
            running_mean.mul_(1 - factor).add_(mean.to(running_mean.dtype), alpha=factor)
            running_var.mul_(1 - factor).add_(unbiased.to(running_var.dtype), alpha=factor)
        mean32, invstd32 = mean.to(x.dtype), invstd.to(x.dtype)
        xhat = (x - mean32.view(shape)) * invstd32.view(shape)
        ctx.save_for_backward(xhat, weight, invstd32, count)
        ctx.has_bias = bias is not None
        out = xhat
        if weight is not None:
            out = out * weight.view(shape)
        if bias is not None:
            out = out + bias.view(shape)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        xhat, weight, invstd, count = ctx.saved_tensors
        dims = [0, *range(2, grad.dim())]
        shape = [1, -1] + [1] * (grad.dim() - 2)
        channels = grad.shape[1]
        sums = torch.cat([grad.double().sum(dims), (grad.double() * xhat.double()).sum(dims)])
        grad_bias = sums[:channels].to(grad.dtype)  # this rank's share; DDP averages parameters
        grad_weight = sums[channels:].to(grad.dtype)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)  # every rank's upstream gradient
        mean_dy = (sums[:channels] / count).to(grad.dtype).view(shape)
        mean_dy_xhat = (sums[channels:] / count).to(grad.dtype).view(shape)
        scale = invstd if weight is None else invstd * weight
        grad_x = (grad - mean_dy - xhat * mean_dy_xhat) * scale.view(shape)
        return (
            grad_x,
            None if weight is None else grad_weight,
            grad_bias if ctx.has_bias else None,
            None,
            None,
            None,
            None,
        )


class SyncBatchNorm(_BatchNorm):
    """BatchNorm whose training-mode statistics are those of the global batch over all ranks.

    Eval mode, and training in a single process, is ordinary batch norm; the parameters and
    buffers are those of ``nn.BatchNorm*d``, so checkpoints load either way.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, input: Tensor) -> Tensor:
        use_batch = self.training or not self.track_running_stats
        if not (use_batch and current().distributed):
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        update = self.training and self.track_running_stats
        out: Tensor = _GlobalBatchNorm.apply(
            input,
            self.weight,
            self.bias,
            self.running_mean if update else None,
            self.running_var if update else None,
            factor,
            self.eps,
        )
        return out


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm replaced by :class:`SyncBatchNorm`, sharing its parameters
    and buffers (so an optimizer built on ``module`` keeps working)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        replacement = SyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            replacement.weight = module.weight
            replacement.bias = module.bias
        replacement.running_mean = module.running_mean
        replacement.running_var = module.running_var
        replacement.num_batches_tracked = module.num_batches_tracked
        replacement.train(module.training)
        return replacement
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def wrap(model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
    """``model`` for data-parallel training: BatchNorm synchronised (``sync_bn``) in place, and
    the ``DistributedDataParallel`` wrapper to train through (the model itself in one process).

    The attack's forward passes and the measurement use ``model`` itself: they need no gradient
    averaging, and with ``sync_bn`` the training-mode attack still sees global BN statistics.
    """
    if not current().distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn:
        if device.type == "cuda":
            converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            converted = convert_sync_batchnorm(model)
        assert converted is model  # the root of a classifier is never a BatchNorm
    # synchronised BN keeps identical buffers on every rank; without it, rank 0's running
    # statistics are broadcast at every forward as DDP does by default (the keyword was renamed)
    keyword = (
        "forward_sync_buffers"
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else "broadcast_buffers"
    )
    options: dict[str, Any] = {keyword: not sync_bn}
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, **options
    )
