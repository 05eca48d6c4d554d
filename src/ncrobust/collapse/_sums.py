"""Per-class counts and float64 feature sums: the first pass of every NC statistic, mergeable
and all-reducible across processes."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor

# Rows are converted to float64 a chunk at a time into one reused buffer: a CPU chunk stays in
# cache (4 MiB), a GPU chunk is large enough to keep the kernels busy. At least MIN_CHUNK_ROWS
# rows per chunk, so a very wide layer does not re-read the p×k pass-2 matrix for every row
# (on a 2-core CPU, p = 65,536: 8 rows per chunk was fastest, 256 took twice as long).
CHUNK_ELEMENTS = {"cpu": 1 << 19, "cuda": 1 << 24}
MIN_CHUNK_ROWS = 8
# Pass 2's k′-wide per-row work runs on blocks of whole chunks holding about this many values
# per k′-wide temporary: a block's temporaries stay in cache, where a whole batch's (50,000 ×
# 100 float64: 40 MB each) cost a fresh allocation and page faults apiece; larger blocks
# amortise the per-call overhead of the dozen small operations per block.
BLOCK_ELEMENTS = 1 << 18
# Up to this many classes, subtracting the class means as a one-hot matmul beats gathering them
# row by row (2-core CPU: 1.7× faster at C = 10, 2× slower at C = 100).
ONE_HOT_MAX_CLASSES = 32


def chunk_rows(h: Tensor) -> int:
    """Rows per float64 chunk of ``h`` (n × p, n ≥ 1) on its device (``float64_chunks``)."""
    n, p = h.shape
    budget = CHUNK_ELEMENTS.get(h.device.type, CHUNK_ELEMENTS["cuda"])
    return min(n, max(MIN_CHUNK_ROWS, budget // max(p, 1)))


def block_rows(h: Tensor, width: int) -> int:
    """Rows per block of pass 2's per-row work over ``h`` (n × p, n ≥ 1) on ``width`` columns
    (k′, C): a whole number of chunks, so every block ends where a chunk does."""
    step = chunk_rows(h)
    return min(h.shape[0], step * -(-BLOCK_ELEMENTS // (step * max(width, 1))))


def float64_chunks(
    h: Tensor, minus: Tensor | None = None, labels: Tensor | None = None
) -> Iterator[tuple[slice, Tensor]]:
    """(rows, float64 copy of h[rows]) over ``h`` (n × p), sized for its device; with
    ``minus`` (C × p, float64) and ``labels`` (n), the copy is h[rows] − minus[labels[rows]],
    (a float32 h is exact in float64, so only the difference rounds).

    The copies share one buffer allocated per call (a fresh large allocation per chunk costs
    page faults on the CPU): each view is valid only until the next one is yielded.
    """
    n, p = h.shape
    if n == 0:
        return
    step = chunk_rows(h)
    buffer = torch.empty(step, p, dtype=torch.float64, device=h.device)
    gathered = None
    if minus is not None and minus.shape[0] > ONE_HOT_MAX_CLASSES:
        gathered = torch.empty_like(buffer)
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        chunk = buffer[: rows.stop - start]
        if minus is None:
            chunk.copy_(h[rows])
        else:
            assert labels is not None
            chunk.copy_(h[rows])  # then a float64 subtraction: faster than a mixed-dtype one
            if gathered is None:
                # chunk − onehot(labels) @ minus: one exact rounding per entry, no gathered copy
                onehot = labels[rows, None] == torch.arange(minus.shape[0], device=h.device)
                chunk.addmm_(onehot.to(chunk.dtype), minus, alpha=-1.0)
            else:
                centres = gathered[: rows.stop - start]
                torch.index_select(minus, 0, labels[rows], out=centres)
                chunk.sub_(centres)
        yield rows, chunk


def sync_requested(sync: bool | None) -> bool:
    """Whether to all-reduce: ``sync`` if given, else whether a process group of >1 is running."""
    if sync is not None:
        return sync
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: Tensor) -> None:
    """Sum ``tensor`` in place over the default process group."""
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


class ClassSums:
    """Counts (C) and float64 sums (C × p) of features grouped by an integer label."""

    def __init__(self, num_classes: int, num_features: int, device: torch.device) -> None:
        self.num_classes = num_classes
        self.num_features = num_features
        self.counts = torch.zeros(num_classes, dtype=torch.int64, device=device)
        self.sums = torch.zeros(num_classes, num_features, dtype=torch.float64, device=device)

    def batch(self, h: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Counts and float64 sums of one batch ``h`` (n × p, on the state's device)."""
        sums = torch.zeros_like(self.sums)
        for rows, chunk in float64_chunks(h):
            sums.index_add_(0, labels[rows], chunk)
        return torch.bincount(labels, minlength=self.num_classes), sums

    def add(self, counts: Tensor, sums: Tensor) -> None:
        """Add a batch's (or another accumulator's) counts and sums."""
        self.counts += counts.to(self.counts.device)
        self.sums += sums.to(self.sums.device)

    def all_reduce(self) -> None:
        """Sum counts and sums over all processes in one collective (counts exact below 2**53)."""
        packed = torch.cat([self.counts.to(torch.float64)[:, None], self.sums], dim=1)
        all_reduce_sum(packed)
        self.counts = packed[:, 0].round().to(torch.int64)
        self.sums = packed[:, 1:].contiguous()

    def means(self) -> Tensor:
        """Class means (C × p); rows of empty classes are NaN."""
        return self.sums / self.counts.to(torch.float64)[:, None]
