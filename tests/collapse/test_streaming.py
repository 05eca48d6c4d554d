"""The streaming accumulator: batching, merging, torch.distributed and bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from ncrobust.collapse import CollapseAccumulator, collapse_metrics


def dataset(n: int = 257, p: int = 12, num_classes: int = 5, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat(
        [torch.arange(num_classes), torch.randint(0, num_classes, (n - num_classes,), generator=g)]
    )
    centres = 3.0 * torch.randn(num_classes, p, generator=g) + 2.0
    features = centres[labels] + torch.randn(n, p, generator=g)
    weight = torch.randn(num_classes, p, generator=g)
    bias = torch.randn(num_classes, generator=g)
    return {
        "features": features,
        "labels": labels,
        "logits": features @ weight.T + bias + 0.5 * torch.randn(n, num_classes, generator=g),
        "weight": weight,
        "bias": bias,
        "reference": centres + 0.2 * torch.randn(num_classes, p, generator=g),
        "num_classes": num_classes,
    }


def accumulator(data: dict) -> CollapseAccumulator:
    return CollapseAccumulator(
        data["num_classes"],
        weight=data["weight"],
        bias=data["bias"],
        reference_means=data["reference"],
    )


def feed(
    acc: CollapseAccumulator, data: dict, sizes: list[int], order: torch.Tensor | None = None
) -> None:
    index = torch.arange(len(data["labels"])) if order is None else order
    start = 0
    for size in sizes:
        rows = index[start : start + size]
        acc.update(data["features"][rows], data["labels"][rows], data["logits"][rows])
        start += size
    assert start == len(index)


def in_memory_with_table(data: dict) -> tuple[dict[str, float], pd.DataFrame]:
    return collapse_metrics(
        data["features"],
        data["labels"],
        data["num_classes"],
        data["weight"],
        data["bias"],
        reference_means=data["reference"],
        logits=data["logits"],
        per_class=True,
    )


def in_memory(data: dict) -> dict[str, float]:
    return in_memory_with_table(data)[0]


def assert_same_table(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got, want, rtol=1e-12, atol=1e-14)


def assert_same(got: dict[str, float], want: dict[str, float]) -> None:
    assert list(got) == list(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-14), key


@pytest.mark.parametrize(
    "sizes",
    [[1] * 257, [7] * 36 + [5], [3, 100, 1, 153], [257]],
    ids=["size-1", "size-7", "uneven", "one-batch"],
)
def test_any_batching_equals_the_in_memory_call(sizes: list[int]) -> None:
    data = dataset()
    acc = accumulator(data)
    feed(acc, data, sizes)
    acc.next_pass()
    # pass 2 in another order and batching than pass 1
    feed(acc, data, list(reversed(sizes)), order=torch.randperm(257))
    values, table = in_memory_with_table(data)
    assert_same(acc.compute(), values)
    assert_same_table(acc.per_class(), table)


def test_merge_of_a_split_equals_one_accumulator() -> None:
    data = dataset()
    first, second = accumulator(data), accumulator(data)
    feed(first, data, [100], order=torch.arange(100))
    feed(second, data, [60, 97], order=torch.arange(100, 257))
    first.merge(second)
    first.next_pass()
    twin = first.fork()
    feed(first, data, [57], order=torch.arange(200, 257))
    feed(twin, data, [200], order=torch.arange(200))
    first.merge(twin)
    values, table = in_memory_with_table(data)
    assert_same(first.compute(), values)
    assert_same_table(first.per_class(), table)
    torch.testing.assert_close(
        first.means(),
        torch.stack([data["features"][data["labels"] == c].double().mean(0) for c in range(5)]),
    )


def test_pass_two_merge_refuses_different_means() -> None:
    data = dataset()
    a, b = accumulator(data), accumulator(data)
    feed(a, data, [257])
    feed(b, data, [100], order=torch.arange(100) * 2 % 257)
    a.next_pass()
    b.next_pass()
    with pytest.raises(ValueError, match="class means differ"):
        a.merge(b)


def test_merge_refuses_mismatched_accumulators() -> None:
    data = dataset()
    a = accumulator(data)
    with pytest.raises(ValueError, match="different weight"):
        a.merge(CollapseAccumulator(5, reference_means=data["reference"]))
    with pytest.raises(ValueError, match="3 classes"):
        a.merge(CollapseAccumulator(3))
    b = accumulator(data)
    feed(b, data, [257])
    b.next_pass()
    with pytest.raises(ValueError, match="pass 2 into one in pass 1"):
        a.merge(b)
    with pytest.raises(ValueError, match="itself"):
        a.merge(a)


def test_reference_global_mean_centres_the_reference_simplex() -> None:
    data = dataset()
    reference = CollapseAccumulator(5)
    feed(reference, {**data, "logits": data["logits"]}, [257])
    reference.next_pass()
    acc = CollapseAccumulator(
        5, reference_means=reference.means(), reference_global_mean=reference.global_mean()
    )
    feed(acc, data, [257])
    acc.next_pass()
    feed(acc, data, [257])
    got = acc.compute()
    # S′ = S with the exact count-weighted centre on both sides: the simplices coincide
    assert got["simplex_similarity"] == pytest.approx(0.0, abs=1e-7)
    assert got["angular_distance"] == pytest.approx(0.0, abs=1e-7)
    # the plain average of the (unbalanced) class means is a different centre
    plain = collapse_metrics(data["features"], data["labels"], 5, reference_means=reference.means())
    assert plain["simplex_similarity"] > 1e-4
    assert reference.counts().tolist() == torch.bincount(data["labels"], minlength=5).tolist()


DISTRIBUTED_SCRIPT = """
import json, sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ncrobust.collapse import AttackStatistics, CollapseAccumulator


def data():
    g = torch.Generator().manual_seed(5)
    labels = torch.cat([torch.arange(4), torch.randint(0, 4, (146,), generator=g)])
    centres = 3.0 * torch.randn(4, 9, generator=g)
    features = centres[labels] + torch.randn(150, 9, generator=g)
    weight = torch.randn(4, 9, generator=g)
    logits = features @ weight.T
    return features, labels, logits, weight, centres


def run(acc, stats, features, labels, logits):
    acc.update(features, labels, logits)
    if stats is not None:
        stats.update(features, logits.argmax(1))
    acc.next_pass()
    acc.update(features, labels, logits)
    table = acc.per_class().to_dict("list")
    return acc.compute(), None if stats is None else stats.compute(), table


def worker(rank, world, path, out):
    dist.init_process_group("gloo", init_method="file://" + path, rank=rank, world_size=world)
    torch.set_num_threads(1)
    features, labels, logits, weight, centres = data()
    shard = slice(0, 61) if rank == 0 else slice(61, 150)  # uneven shards
    acc = CollapseAccumulator(4, weight=weight, reference_means=centres)
    stats = AttackStatistics(4, centres)
    result = run(acc, stats, features[shard], labels[shard], logits[shard])
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"means": acc.means().tolist(), "metrics": result[0], "stats": result[1],
                       "per_class": result[2]}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    path, out, single = sys.argv[1:4]
    mp.spawn(worker, args=(2, path, out), nprocs=2)
    features, labels, logits, weight, centres = data()
    acc = CollapseAccumulator(4, weight=weight, reference_means=centres)
    stats = AttackStatistics(4, centres)
    metrics, statistics, table = run(acc, stats, features, labels, logits)
    with open(single, "w") as f:
        json.dump({"means": acc.means().tolist(), "metrics": metrics, "stats": statistics,
                   "per_class": table}, f)
"""


def test_two_gloo_processes_equal_one(tmp_path: Path) -> None:
    script = tmp_path / "distributed.py"
    script.write_text(textwrap.dedent(DISTRIBUTED_SCRIPT))
    outputs = [tmp_path / "two.json", tmp_path / "one.json"]
    command = [sys.executable, str(script), str(tmp_path / "rendezvous"), *map(str, outputs)]
    subprocess.run(command, check=True, timeout=240)
    two, one = (json.loads(path.read_text()) for path in outputs)
    torch.testing.assert_close(
        torch.tensor(two["means"]), torch.tensor(one["means"]), rtol=1e-13, atol=0
    )
    assert_same(two["metrics"], one["metrics"])
    assert {"cdnv", "nc1_trace_ratio", "etf_error", "gnc2", "unc3"} <= set(one["metrics"])
    assert_same_table(pd.DataFrame(two["per_class"]), pd.DataFrame(one["per_class"]))
    assert two["stats"]["counts"] == one["stats"]["counts"]
    assert sum(one["stats"]["counts"]) == 150
    torch.testing.assert_close(
        torch.tensor(two["stats"]["angle"]), torch.tensor(one["stats"]["angle"]), equal_nan=True
    )


MEMORY_SCRIPT = """
import resource, sys
import torch
from ncrobust.collapse import CollapseAccumulator

torch.set_num_threads(1)
p, classes, batch, batches = 65536, 10, 32, 10

def stream(acc):
    for i in range(batches):
        g = torch.Generator().manual_seed(i)
        labels = torch.arange(i * batch, (i + 1) * batch) % classes
        features = torch.randn(batch, p, generator=g) + labels[:, None].float()
        acc.update(features, labels, torch.randn(batch, classes, generator=g))

warm = CollapseAccumulator(classes, weight=torch.randn(classes, p))
stream(warm)  # allocator and library warm-up with the same shapes
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
reference = torch.randn(classes, p)
acc = CollapseAccumulator(classes, weight=torch.randn(classes, p), reference_means=reference)
stream(acc)
acc.next_pass()
stream(acc)
metrics = acc.compute()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert all(v == v for v in metrics.values()), metrics
print((after - before) * 1024, metrics["nc1"])
"""


def test_wide_features_stream_in_bounded_memory(tmp_path: Path) -> None:
    # a p×p float64 Σ_W for p = 65,536 would take 32 GiB; the accumulator needs O(C·p)
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script)], check=True, capture_output=True, text=True, timeout=240
    )
    extra_bytes, nc1 = result.stdout.split()
    assert int(extra_bytes) < 1 << 30, f"peak grew by {int(extra_bytes) / 2**20:.0f} MiB"
    assert float(nc1) > 0


def test_empty_batches_are_no_ops() -> None:
    data = dataset()
    acc = accumulator(data)
    empty = (torch.empty(0, 12), torch.empty(0, dtype=torch.long), torch.empty(0, 5))
    acc.update(*empty)
    feed(acc, data, [257])
    acc.next_pass()
    acc.update(*empty)
    feed(acc, data, [257])
    assert_same(acc.compute(), in_memory(data))


@pytest.mark.gpu
def test_cuda_state_gives_the_cpu_values() -> None:
    data = dataset(n=3000, p=700, num_classes=10)
    cuda = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in data.items()}
    acc = accumulator(cuda)
    feed(acc, cuda, [1000, 2000])
    acc.next_pass()
    feed(acc, cuda, [3000])
    assert acc.means().is_cuda
    got, want = acc.compute(), in_memory(data)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-10, abs=1e-12), key


def test_self_reference_is_the_ncc_classifier_of_the_datas_own_means() -> None:
    """S′ = S: ncc_accuracy is the own-means NCC accuracy and ncc_match = 1 − nc4."""
    g = torch.Generator().manual_seed(11)
    labels = torch.cat([torch.arange(4), torch.randint(0, 4, (196,), generator=g)])
    features = torch.randn(4, 12, generator=g)[labels] + 1.5 * torch.randn(200, 12, generator=g)
    logits = torch.randn(200, 4, generator=g)
    accumulator = CollapseAccumulator(4, self_reference=True)
    for _ in range(2):
        for chunk in torch.arange(200).split(64):
            accumulator.update(features[chunk], labels[chunk], logits[chunk])
        if accumulator.current_pass == 1:
            accumulator.next_pass()
    values = accumulator.compute()
    means = torch.stack([features[labels == c].double().mean(0) for c in range(4)])
    nearest = torch.cdist(features.double(), means).argmin(1)
    assert values["ncc_accuracy"] == pytest.approx((nearest == labels).double().mean().item())
    assert values["ncc_match"] == pytest.approx(1.0 - values["nc4"])
    assert values["nc4"] == pytest.approx((nearest != logits.argmax(1)).double().mean().item())
    with pytest.raises(ValueError, match="exclude each other"):
        CollapseAccumulator(4, self_reference=True, reference_means=means)
