"""One rank of the 2-process runs of test_distributed.py, started by ``torchrun`` (gloo, CPU).

Usage: ``torchrun --nproc-per-node 2 _distributed_worker.py ROOT``. Every rank records, with
an audit hook, each file it opens for writing, renames, creates or removes under ROOT/runs,
and saves that list as ROOT/writes-<rank>.json. The ranks then check SyncBatchNorm against
one-process BatchNorm on the same global batch (ROOT/syncbn-<rank>.json), train ST, AT and
TRADES through the CLI (ROOT/runs/<mode>), start an AT run that stops after one epoch
(ROOT/runs/at_resume), train the ST run again with per-process BatchNorm (ROOT/runs/st_local,
``--no-sync-bn``) and measure the ST run's last checkpoint through the CLI.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ncrobust.cli import main
from ncrobust.config import build_config
from ncrobust.distributed import SyncBatchNorm, convert_sync_batchnorm, shard_rows
from ncrobust.training import train

RUN_ARGS = [
    "--dataset", "digits", "--model", "small_cnn", "--steps", "2", "--eps", "0.15",
    "--alpha", "0.05", "--lr", "0.05", "--measure-batch-size", "512", "--device", "cpu",
    "--measure-every", "2", "--checkpoint-every", "1", "--quiet",
]  # fmt: skip
# Per mode: 4 steps of 720 (the last of 717 split 359/358) for ST and AT; one step of the whole
# split (719/718) for TRADES, whose attack starts where the KL gradient is ~0, so that the sign
# of its first step follows float rounding (even one process on 1 or 2 threads drifts apart).
MODE_ARGS = {
    "st": ["--mode", "st", "--batch-size", "720", "--epochs", "2",
           "--views", "clean,pgd@test,targeted@test,gaussian"],
    "at": ["--mode", "at", "--batch-size", "720", "--epochs", "2"],
    "trades": ["--mode", "trades", "--batch-size", "1438", "--epochs", "1"],
}  # fmt: skip
# The ST run with per-process BatchNorm statistics (--no-sync-bn), measured on the clean view.
LOCAL_BN_ARGS = [*MODE_ARGS["st"][:-2], "--views", "clean", "--no-sync-bn"]
MUTATIONS = ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _audit(root: Path, writes: list[str]) -> None:
    """Record every write-like file operation under ``root``."""
    watched = str(root)

    def under(path: Any) -> bool:
        try:
            return os.fspath(path).startswith(watched)
        except TypeError:
            return False

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and args and under(args[0]):
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS
            ):
                writes.append(f"open {args[0]}")
        elif event in MUTATIONS and args and under(args[0]):
            writes.append(f"{event} {args[0]}")

    sys.addaudithook(hook)


def _syncbn_errors() -> dict[str, float]:
    """Largest differences between this rank's SyncBatchNorm on its rows of a global batch and
    nn.BatchNorm on the whole batch: outputs, input gradients, parameter gradients, buffers."""
    rank, world = dist.get_rank(), dist.get_world_size()
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(13, 5, 4, 3, generator=generator) * 2 + 1  # 13 rows: an uneven split
    upstream = torch.randn(13, 5, 4, 3, generator=generator)
    reference = nn.Sequential(nn.BatchNorm2d(5), nn.Flatten(), nn.BatchNorm1d(60))
    with torch.no_grad():
        for module in reference:
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.5, 0.5, generator=generator)
    synced = convert_sync_batchnorm(
        nn.Sequential(nn.BatchNorm2d(5), nn.Flatten(), nn.BatchNorm1d(60))
    )
    assert all(isinstance(synced[i], SyncBatchNorm) for i in (0, 2))
    synced.load_state_dict(reference.state_dict())
    whole = x.clone().requires_grad_(True)
    out = reference(whole)
    out.backward(upstream.flatten(1))
    start, stop = shard_rows(13, rank, world)
    mine = x[start:stop].clone().requires_grad_(True)
    out_mine = synced(mine)
    out_mine.backward(upstream[start:stop].flatten(1))
    grads = torch.cat([p.grad.flatten() for p in synced.parameters()])
    dist.all_reduce(grads)  # the sum of the ranks' parameter gradients (DDP then averages)
    expected = torch.cat([p.grad.flatten() for p in reference.parameters()])
    assert mine.grad is not None and whole.grad is not None
    return {
        "output": (out_mine - out[start:stop]).abs().max().item(),
        "input_grad": (mine.grad - whole.grad[start:stop]).abs().max().item(),
        "param_grad": (grads - expected).abs().max().item(),
        "buffers": max(
            (a - b).abs().max().item()
            for a, b in zip(synced.buffers(), reference.buffers(), strict=True)
        ),
    }


def run(root: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    writes: list[str] = []
    _audit(root / "runs", writes)
    (root / f"syncbn-{rank}.json").write_text(json.dumps(_syncbn_errors()))
    for mode in MODE_ARGS:
        out = str(root / "runs" / mode)
        code = main(["train", *RUN_ARGS, *MODE_ARGS[mode], "--out", out])
        assert code == 0, (rank, mode, code)
    overrides = {
        "dataset": "digits", "model": "small_cnn", "steps": 2, "eps": 0.15, "alpha": 0.05,
        "lr": 0.05, "measure_batch_size": 512, "device": "cpu", "epochs": 2, "batch_size": 720,
        "measure_every": 2, "checkpoint_every": 1, "mode": "at",
        "out": str(root / "runs" / "at_resume"),
    }  # fmt: skip
    train(build_config(overrides=overrides), progress=False, stop_after=1)
    code = main(["train", *RUN_ARGS, *LOCAL_BN_ARGS, "--out", str(root / "runs" / "st_local")])
    assert code == 0, (rank, "st_local", code)
    code = main(["measure", str(root / "runs" / "st"), "--views", "clean,pgd,gaussian,targeted"])
    assert code == 0, (rank, "measure", code)
    (root / f"writes-{rank}.json").write_text(json.dumps(writes))
    dist.destroy_process_group()


if __name__ == "__main__":
    run(Path(sys.argv[1]))
