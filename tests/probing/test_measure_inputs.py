"""measure's data in: tensors, numpy, lists, any sample shape, bounds, normalisation, streams;
every bad input refused with a message naming the split, the argument and the form."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SubsetRandomSampler, TensorDataset

from ncrobust.analysis import AttackSettings
from ncrobust.errors import UsageError
from ncrobust.probing import measure

from .conftest import (
    ATTACK,
    CLASSES,
    ConvNet,
    Net1D,
    images,
    one_thread,  # noqa: F401 - the autouse fixture
    sequences,
    values,
    with_bn_stats,
)


def test_uint8_float_and_numpy_inputs_give_the_same_numbers() -> None:
    torch.manual_seed(0)
    model = with_bn_stats(ConvNet())
    x8, y = images(6, seed=1)
    xt8, yt = images(3, seed=2)
    options = dict(layers=["conv", "bn", "penultimate"], views=["clean", "pgd"], attack=ATTACK)
    base = values(measure(model, {"train": (x8, y), "test": (xt8, yt)}, **options))
    assert len(base) > 40
    same = [
        {"train": (x8.float() / 255, y), "test": (xt8.float() / 255, yt)},  # float pixels
        {"train": (x8.numpy(), y.numpy()), "test": (xt8.numpy(), yt.numpy())},  # numpy uint8
        {"train": (x8, y.tolist()), "test": (xt8, yt.to(torch.int16)[:, None])},  # list, column
        {"train": ((x8.float() / 255).numpy(), y.numpy().astype(np.int32)), "test": (xt8, yt)},
    ]
    for data in same:
        pd.testing.assert_series_equal(values(measure(model, data, **options)), base)
    close = [
        {"train": (x8.double() / 255, y), "test": (xt8.double() / 255, yt)},
        {"train": (x8.bfloat16() / 255, y), "test": (xt8, yt)},
    ]
    for data in close[:1]:  # float64 rounds to the model's float32 like x / 255 does, nearly
        other = values(measure(model, data, **options))
        assert np.allclose(other.to_numpy(), base.to_numpy(), rtol=1e-4, atol=1e-6)
    table = measure(model, close[1], **options)  # bfloat16 pixels are accepted (and rounded)
    assert set(table.split) == {"train", "test"}


def test_vectors_and_sequences_are_measured() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, CLASSES)).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, 5, generator=g)
    y = torch.arange(60) % CLASSES
    table = measure(mlp, (x, y), layers="all", views=["clean", "gaussian"], attack=ATTACK)
    assert list(table.layer.cat.categories) == ["0", "1", "penultimate", "output"]
    accuracy = table.query("view == 'clean' and metric == 'accuracy'").value.item()
    with torch.no_grad():
        assert accuracy == pytest.approx(float((mlp(x).argmax(1) == y).float().mean()))
    net = Net1D().eval()
    xs, ys = sequences(8, seed=0)
    table = measure(net, (xs, ys), layers=["conv1", "act2", "penultimate"], attack=ATTACK)
    nc1 = table.query("view == 'pgd' and metric == 'nc1'").set_index("layer").value
    assert set(nc1.index) == {"conv1", "act2", "penultimate"}
    assert all(math.isfinite(v) for v in nc1)


class Recording(nn.Module):
    """Records the range of every input batch it sees."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.low, self.high = math.inf, -math.inf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.low = min(self.low, float(x.detach().min()))
        self.high = max(self.high, float(x.detach().max()))
        return self.inner(x)


def test_bounds_other_than_unit_pixels() -> None:
    """Data in [-1, 1]: refused under the default [0,1] naming ``bounds``; with bounds=(-1, 1)
    the attacks and noise stay inside them although the data touch both faces."""
    torch.manual_seed(0)
    xs, ys = sequences(8, seed=3)
    x = xs * 2 - 1
    x[0, 0, :2] = torch.tensor([-1.0, 1.0])
    model = Recording(Net1D()).eval()
    with pytest.raises(UsageError, match=r"outside the input bounds \[0, 1\].*bounds=\(lo, hi\)"):
        measure(model, (x, ys))
    attack = AttackSettings(eps=0.3, alpha=0.2, steps=3, gaussian_std=0.5)
    table = measure(model, (x, ys), bounds=(-1.0, 1.0), views=["clean", "pgd", "gaussian"],
                    attack=attack)  # fmt: skip
    assert model.low == -1.0 and model.high == 1.0  # reached, never crossed
    assert set(table.view) == {"clean", "pgd", "gaussian"}
    unbounded = Recording(Net1D()).eval()
    measure(unbounded, (x, ys), bounds=None, views=["gaussian"], attack=attack)
    assert unbounded.low < -1.0 and unbounded.high > 1.0  # no box: noise is not clamped
    per_channel = (torch.tensor([-1.0]), torch.tensor([1.0]))
    again = measure(Net1D().eval(), (x, ys), bounds=per_channel, views=["clean"])
    assert len(again) > 0


def test_normalisation_outside_the_model_equals_inside() -> None:
    torch.manual_seed(0)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    inner = with_bn_stats(ConvNet(channels=3))
    x, y = images(5, seed=4, channels=3)

    class Normalised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = torch.tensor(mean).reshape(1, 3, 1, 1)
            s = torch.tensor(std).reshape(1, 3, 1, 1)
            return self.net((x - m) / s)

    options = dict(views=["clean", "pgd"], attack=ATTACK)
    outside = measure(inner, (x, y), normalize=(mean, std), layers=["bn", "penultimate"], **options)
    inside = measure(Normalised(), (x, y), layers=["net.bn", "penultimate"], **options)
    inside["layer"] = inside.layer.astype(str).str.removeprefix("net.")
    a, b = values(outside), values(inside)
    assert np.allclose(a.to_numpy(), b.to_numpy(), rtol=1e-5, atol=1e-7)
    plain = measure(inner, (x, y), layers=["penultimate"], views=["clean"])
    acc = plain.query("metric == 'accuracy'").value.item()
    assert acc != pytest.approx(a[("train", "clean", "output", "accuracy")])  # it matters


def test_datasets_and_loaders_stream_with_the_same_numbers() -> None:
    torch.manual_seed(0)
    net = Net1D().eval()
    x, y = sequences(10, seed=5)
    xt, yt = sequences(4, seed=6)
    options = dict(layers=["conv2", "penultimate"], views=["clean", "pgd"], attack=ATTACK,
                   batch_size=8, cache_mb=0)  # fmt: skip
    base = values(measure(net, {"train": (x, y), "test": (xt, yt)}, **options))
    streamed = {
        "train": TensorDataset(x, y),
        "test": DataLoader(TensorDataset(xt, yt), batch_size=5, shuffle=False),
    }
    other = values(measure(net, streamed, **options))
    assert np.allclose(other.to_numpy(), base.to_numpy(), rtol=1e-6, atol=1e-9)
    assert list(other.index) == list(base.index)
    shuffled = DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True)
    with pytest.raises(UsageError, match="shuffle=True"):
        measure(net, shuffled)
    reordering = DataLoader(TensorDataset(x, y), batch_size=5,
                            sampler=SubsetRandomSampler(range(len(y))))  # fmt: skip
    with pytest.raises(UsageError, match="another order or other data on a second pass"):
        measure(net, reordering, views=["clean"])

    class NumpyPairs(Dataset):
        def __len__(self) -> int:
            return len(y)

        def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
            return x[i].numpy(), int(y[i])

    per_channel = measure(net, NumpyPairs(), views=["clean"], layers=["conv2", "penultimate"],
                          bounds=(torch.zeros(1), torch.ones(1)), batch_size=8)  # fmt: skip
    clean = base.loc["train", "clean"]
    assert np.allclose(values(per_channel).loc["train", "clean"].to_numpy(), clean.to_numpy())


def _bad_cases() -> list[tuple[dict, str]]:
    x, y = sequences(4, seed=0)
    return [
        (dict(data=(x, y + 1)), r"split 'train': labels span \[1, 3\] .* in \[0, 3\)"),
        (dict(data=(x, y[:-1])), r"split 'train': y must have shape \[12\]"),
        (dict(data=(x.masked_fill(x > 0.9, math.nan), y)), "split 'train': x holds NaN"),
        (dict(data=(x.masked_fill(x > 0.9, math.inf), y)), "NaN or infinite"),
        (dict(data=(x, y.to("meta"))), r"x is on cpu but y is on meta"),
        (dict(data=(x, y.float())), "y must hold integer class indices"),
        (dict(data=(x, [0.5] * 12)), "y must hold integer class indices"),
        (dict(data=(x.long(), y)), r"fails on an example batch \(torch.int64.*convert x"),
        (dict(data=(x[:0], y[:0])), "non-empty batch"),
        (dict(data={"test": (x, y)}), "needs a 'train' split"),
        (dict(data={"val": (x, y)}), "unknown split 'val'"),
        (dict(data={"train": (x, y), "test": (x[:, :, :20], y)}), "differ in shape"),
        (dict(data="x.npy"), "data must be"),
        (dict(attack=AttackSettings(eps=8)), r"attack eps=8 is larger .*8/255"),
        (dict(attack=AttackSettings(norm="l3")), "unknown norm 'l3'"),
        (dict(attack=AttackSettings(steps=0)), "steps must be an integer >= 1"),
        (dict(views=["clean", "fgsm"]), "unknown view 'fgsm'"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(num_classes=5), "num_classes=5 but the model returns 3 logits"),
        (dict(normalize=((0.5,), (0.2,)), transform=lambda t: t), "not both"),
        (dict(bounds=(1.0, 0.0)), "lo must be < hi"),
        (dict(layers=["penultimate"], pool=2), "none of the layers"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_each_bad_input_raises_a_named_usage_error(case: int) -> None:
    override, message = _bad_cases()[case]
    x, y = sequences(4, seed=0)
    kwargs = {"data": (x, y), "views": ["clean"], **override}
    data = kwargs.pop("data")
    with pytest.raises(UsageError, match=message):
        measure(Net1D().eval(), data, **kwargs)
