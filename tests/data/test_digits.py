"""The embedded default: scikit-learn digits, split 80/20 per class, trainable in seconds."""

from __future__ import annotations

import numpy as np
import torch

from ncrobust.data import ImageDataset, batches, load_dataset


def test_shapes_values_and_totals() -> None:
    data = load_dataset("digits")
    assert len(data.train) + len(data.test) == 1797
    assert (len(data.train), len(data.test)) == (1437, 360)
    assert data.image_shape == (1, 8, 8) and data.num_classes == 10
    assert data.train.images.dtype == torch.uint8
    values = torch.cat([data.train.images, data.test.images]).unique()
    expected = np.round(np.arange(17) * 255 / 16).astype(np.uint8)  # the 17 levels 0..16
    assert set(values.tolist()) <= set(expected.tolist()) and values.max() == 255


def test_split_is_stratified_80_20() -> None:
    from sklearn.datasets import load_digits

    totals = np.bincount(load_digits().target)
    data = load_dataset("digits")
    test_counts = torch.bincount(data.test.labels, minlength=10).numpy()
    train_counts = torch.bincount(data.train.labels, minlength=10).numpy()
    np.testing.assert_array_equal(train_counts + test_counts, totals)
    assert np.all(np.abs(test_counts - 0.2 * totals) <= 1)


def test_deterministic_whatever_the_global_rng() -> None:
    torch.manual_seed(1)
    np.random.seed(1)  # noqa: NPY002 - checks the split ignores the legacy global RNG
    first = load_dataset("digits")
    torch.manual_seed(2)
    np.random.seed(2)  # noqa: NPY002
    second = load_dataset("digits")
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels)


def test_batches_in_unit_range_and_stats_from_train() -> None:
    data = load_dataset("digits")
    xs = torch.cat([x for x, _ in batches(data.train, 500, shuffle=False)])
    assert xs.min() == 0.0 and xs.max() == 1.0
    pixels = data.train.images.double() / 255  # train split only
    assert abs(data.mean[0] - float(pixels.mean())) < 1e-12
    assert abs(data.std[0] - float(pixels.std(unbiased=False))) < 1e-12
    assert abs(float(xs.mean()) - data.mean[0]) < 1e-5
    everything = torch.cat([data.train.images, data.test.images]).double() / 255
    assert data.mean[0] != float(everything.mean())


def test_tiny_mlp_reaches_zero_training_error() -> None:
    data = load_dataset("digits")
    # tiny ops: one thread avoids thread hand-off costs on a busy 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_and_check(data)
    finally:
        torch.set_num_threads(threads)


def _train_and_check(data: ImageDataset) -> None:
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [30], 0.1)
    for _ in range(40):
        for x, y in batches(data.train, 128, shuffle=True, generator=generator):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        schedule.step()
    x, y = next(iter(batches(data.train, len(data.train), shuffle=False)))
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all()
