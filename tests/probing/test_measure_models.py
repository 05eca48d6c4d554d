"""measure's models in: outputs that are dicts/tuples/dataclasses, heads that are not Linear,
taps recorded when produced, modules run twice, every layer, pooling, partial splits, and one
foreign model checked against a direct float64 computation."""

from __future__ import annotations

import inspect

import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from ncrobust.analysis import list_layers
from ncrobust.errors import UsageError
from ncrobust.probing import measure
from ncrobust.probing.measure import _pooled
from ncrobust.probing.taps import HookedExtractor, pool_features

from .conftest import (
    ATTACK,
    CLASSES,
    ConvNet,
    DictNet,
    Net1D,
    Output,
    images,
    one_thread,  # noqa: F401 - the autouse fixture
    sequences,
    values,
    with_bn_stats,
)


def _rows(table: pd.DataFrame, split: str = "train", view: str = "clean") -> pd.Series:
    part = table[(table.split == split) & (table.view == view)].astype({"layer": str})
    return part.set_index(["layer", "metric"]).value


# -- a direct float64 computation of the paper's definitions (Appendix B.2) -------------------


def _direct(h: Tensor, y: Tensor, weight: Tensor, bias: Tensor) -> dict[str, float]:
    h, weight, bias = h.double(), weight.double(), bias.double()
    c = int(y.max()) + 1
    means = torch.stack([h[y == k].mean(0) for k in range(c)])
    centred = means - h.mean(0)
    sigma_b = centred.T @ centred / c
    within = h - means[y]
    sigma_w = within.T @ within / len(y)
    norms = centred.norm(dim=1)
    unit = centred / norms[:, None]
    off = ~torch.eye(c, dtype=torch.bool)
    w_unit = (weight / weight.norm(dim=1, keepdim=True)).detach()
    nearest = torch.cdist(h, means).argmin(1)
    predicted = (h @ weight.T + bias).argmax(1)
    return {
        "nc1": float(torch.trace(torch.linalg.pinv(sigma_b) @ sigma_w)),
        "nc2_equinorm": float(norms.std() / norms.mean()),
        "nc2_equiangular": float((unit @ unit.T + 1 / (c - 1))[off].abs().mean()),
        "nc3": float((w_unit - unit).square().sum().sqrt()),
        "nc4": float((nearest != predicted).double().mean()),
    }


def test_a_foreign_1d_model_against_a_direct_float64_computation() -> None:
    torch.manual_seed(0)
    net = Net1D().eval()
    x, y = sequences(12, seed=0)
    xt, yt = sequences(5, seed=1)
    table = measure(net, {"train": (x, y), "test": (xt, yt)}, views=["clean"])
    with torch.no_grad():
        h, ht = net.penultimate(x), net.penultimate(xt)
    for split, feats, labels in (("train", h, y), ("test", ht, yt)):
        rows = _rows(table, split)
        direct = _direct(feats, labels, net.head.weight, net.head.bias)
        for metric, value in direct.items():
            assert rows[("penultimate", metric)] == pytest.approx(value, rel=1e-7, abs=1e-12)
    train_means = torch.stack([h[y == k].double().mean(0) for k in range(CLASSES)])
    ncc = (torch.cdist(ht.double(), train_means).argmin(1) == yt).double().mean()
    assert _rows(table, "test")[("penultimate", "ncc_accuracy")] == pytest.approx(float(ncc))


# -- outputs -------------------------------------------------------------------------------


def test_dict_tuple_and_dataclass_outputs() -> None:
    torch.manual_seed(0)
    net = Net1D().eval()
    x, y = sequences(6, seed=2)
    options = dict(layers=["inner.act2", "penultimate"], views=["clean", "pgd"], attack=ATTACK)
    base = measure(DictNet(net), (x, y), **options)
    wrapped = nn.Sequential()
    wrapped.add_module("inner", net)
    plain = measure(wrapped, (x, y), **options)
    pd.testing.assert_series_equal(values(base), values(plain))

    class TupleNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = net

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return self.inner(x), x

    class DataclassNet(TupleNet):
        def forward(self, x: Tensor) -> Output:  # type: ignore[override]
            return Output(None, self.inner(x))

    for model in (TupleNet(), DataclassNet()):
        pd.testing.assert_series_equal(values(measure(model, (x, y), **options)), values(base))
    odd = DictNet(net, key="scores")  # its one [N, C] element is the logits
    pd.testing.assert_series_equal(values(measure(odd, (x, y), **options)), values(base))

    class TwoScores(TupleNet):
        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
            return self.inner(x), self.inner(x).flip(1)

    with pytest.raises(UsageError, match=r"cannot tell the logits .* pass output="):
        measure(TwoScores(), (x, y))
    picked = measure(odd, (x, y), output="scores", **options)
    pd.testing.assert_series_equal(values(picked), values(base))
    by_callable = measure(odd, (x, y), output=lambda out: out["scores"], **options)
    pd.testing.assert_series_equal(values(by_callable), values(base))
    with pytest.raises(UsageError, match="output='nope'"):
        measure(odd, (x, y), output="nope")


# -- heads ---------------------------------------------------------------------------------


class ConvHead(nn.Module):
    """Global pool, then a 1×1 convolution as the classifier (no nn.Linear anywhere)."""

    def __init__(self, pool_first: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Conv2d(6, CLASSES, 1)
        self.pool_first = pool_first

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x)
        if self.pool_first:
            return self.head(self.pool(h)).flatten(1)
        return self.pool(self.head(h)).flatten(1)


def test_a_1x1_conv_head() -> None:
    torch.manual_seed(0)
    x, y = images(8, seed=3)
    model = ConvHead().eval()
    table = measure(model, (x, y), classifier="head", views=["clean"])
    # found from the logits (the conv's output, flattened) without classifier=
    pd.testing.assert_series_equal(values(measure(model, (x, y), views=["clean"])), values(table))
    with torch.no_grad():
        h = model.pool(model.body(x.float() / 255)).flatten(1)
    weight = model.head.weight.reshape(CLASSES, 6)
    direct = _direct(h, y, weight, model.head.bias)
    rows = _rows(table)
    for metric, value in direct.items():
        assert rows[("penultimate", metric)] == pytest.approx(value, rel=1e-7, abs=1e-12)
    assert table.attrs["missing"] == []
    # a 1×1 conv before the pooling is no C×p matrix of the flattened features: W metrics skip
    late = ConvHead(pool_first=False).eval()
    with pytest.raises(UsageError, match=r"logits come from 'pool' .* classifier=.*'head'"):
        measure(late, (x, y), views=["clean"])
    with pytest.warns(UserWarning, match="no 3×p weight matrix"):
        skipped = measure(late, (x, y), classifier="head", views=["clean"])
    metrics = set(_rows(skipped).loc["penultimate"].index)
    assert {"nc1", "nc2_equinorm", "nc4", "ncc_accuracy"} <= metrics
    assert not metrics & {"nc3", "nc3_frobenius", "nc2_equinorm_w"}
    missing = pd.DataFrame(skipped.attrs["missing"])
    assert set(missing.metric) == {"nc2_equinorm_w", "nc2_equiangular_w", "nc3", "nc3_frobenius"}


def test_an_unused_linear_after_the_classifier_is_not_the_classifier() -> None:
    torch.manual_seed(0)
    model = with_bn_stats(ConvNet())
    x, y = images(8, seed=4)
    model.bn.train()  # a mixed mode is the caller's and comes back as it was
    rows = _rows(measure(model, (x, y), views=["clean"]))
    assert not model.training and model.bn.training and not model.conv.training
    list_layers(model, x)
    assert not model.training and model.bn.training
    model.bn.eval()
    rows = _rows(measure(model, (x, y), views=["clean"]))
    with torch.no_grad():
        h = model.flat(model.pool(model.relu(model.bn(model.conv(x.float() / 255)))))
    direct = _direct(h, y, model.head.weight, model.head.bias)
    assert rows[("penultimate", "nc3")] == pytest.approx(direct["nc3"], rel=1e-7)
    assert "projection" not in list(list_layers(model, x).layer)


# -- taps ----------------------------------------------------------------------------------


def test_a_tap_is_the_value_when_produced_despite_a_later_inplace_relu() -> None:
    torch.manual_seed(0)
    model = with_bn_stats(ConvNet())
    x = images(4, seed=5)[0].float() / 255
    extractor = HookedExtractor(model, model, "head")
    with torch.no_grad():
        _, taps = extractor(x, ["bn", "relu:input", "relu", "penultimate"])
        expected = model.bn(model.conv(x))  # computed without any in-place op
    assert bool((expected < 0).any())  # the ReLU would have changed it
    torch.testing.assert_close(taps["bn"], expected, rtol=0, atol=0)
    torch.testing.assert_close(taps["relu:input"], expected, rtol=0, atol=0)
    torch.testing.assert_close(taps["relu"], expected.clamp(min=0), rtol=0, atol=0)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class SharedReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 8)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(8, 8)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.act(self.fc2(self.act(self.fc1(x)))))


def test_a_module_run_twice_is_refused_and_each_call_can_be_tapped() -> None:
    torch.manual_seed(0)
    model = SharedReLU().eval()
    x = torch.rand(30, 5)
    y = torch.arange(30) % CLASSES
    with pytest.raises(UsageError, match=r"'act' runs 2 times .* act#0, act#1"):
        measure(model, (x, y), layers=["act"])
    with pytest.raises(UsageError, match=r"calls #0 to #1"):
        measure(model, (x, y), layers=["act#2"])
    table = measure(model, (x, y), layers=["act#0", "act#1"], views=["clean"])
    with torch.no_grad():
        first = torch.relu(model.fc1(x))
        second = torch.relu(model.fc2(first))
    rows = _rows(table)
    logits = model.head(second).detach()
    for name, feats in (("act#0", first), ("act#1", second)):
        nearest = torch.cdist(feats.double(), torch.stack(
            [feats[y == k].double().mean(0) for k in range(CLASSES)])).argmin(1)  # fmt: skip
        nc4 = float((nearest != logits.argmax(1)).double().mean())
        assert rows[(name, "nc4")] == pytest.approx(nc4)
    assert list(list_layers(model, x).layer) == ["fc1", "act#0", "fc2", "act#1", "penultimate"]


def test_all_layers_of_a_conv1d_model_in_execution_order_with_shapes() -> None:
    net = Net1D().eval()
    x, y = sequences(4, seed=0)
    layers = list_layers(net, x)
    assert list(layers.layer) == [
        "conv1", "act1", "conv2", "act2", "flat", "fc", "act3", "penultimate",
    ]  # fmt: skip
    shapes = layers.set_index("layer")
    assert shapes.loc["conv1", "shape"] == (4, 40) and shapes.loc["conv1", "p"] == 160
    assert shapes.loc["conv2", "module"] == "Conv1d" and shapes.loc["conv2", "p"] == 120
    assert shapes.loc["penultimate", "p"] == 8
    table = measure(net, (x, y), layers="all", views=["clean"])
    assert list(table.layer.cat.categories) == [*layers.layer, "output"]
    assert list(table.layer.unique()) == ["output", *layers.layer]
    with pytest.raises(UsageError, match="closest: conv1"):
        measure(net, (x, y), layers=["conv_1"])


def test_pooling_1d_features_changes_p_and_values_as_direct_pooling() -> None:
    torch.manual_seed(0)
    net = Net1D().eval()
    x, y = sequences(8, seed=7)
    extractor = HookedExtractor(net, net, "head")
    pooled = _pooled(extractor, 5)
    with torch.no_grad():
        _, full = extractor(x, ["conv1", "fc"])
        _, small = pooled(x, ["conv1", "fc"])
    assert full["conv1"].flatten(1).shape[1] == 160 and small["conv1"].flatten(1).shape[1] == 20
    assert small["fc"].shape == full["fc"].shape  # vectors are not feature maps
    table = measure(net, (x, y), layers=["conv1"], views=["clean"], pool=5)
    with torch.no_grad():
        conv = nn.functional.adaptive_avg_pool1d(net.conv1(x), 5).flatten(1)
        logits = net(x)
    means = torch.stack([conv[y == k].double().mean(0) for k in range(CLASSES)])
    nc4 = float((torch.cdist(conv.double(), means).argmin(1) != logits.argmax(1)).double().mean())
    assert _rows(table)[("conv1", "nc4")] == pytest.approx(nc4)
    volume = torch.rand(2, 3, 4, 6, 6)
    assert pool_features(volume, 2).equal(nn.functional.adaptive_avg_pool3d(volume, (2, 2, 2)))
    assert pool_features(volume, 5).shape == (2, 3, 4, 5, 5)  # no side grows
    with pytest.raises(UsageError, match="1-D, 2-D and 3-D feature maps"):
        pool_features(torch.rand(1, 2, 3, 3, 3, 3), 2)


def test_torchvision_resnet18_taps_with_inplace_relu_and_shared_relus() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = with_bn_stats(torchvision.models.resnet18(weights=None, num_classes=CLASSES))
    x = torch.rand(2, 3, 32, 32)
    names = list(list_layers(model, x).layer)
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert "layer1.0.relu#0" in names and "layer1.0.relu#1" in names
    assert names[-2:] == ["avgpool", "penultimate"] and "fc" not in names
    extractor = HookedExtractor(model, model, "fc")
    with torch.no_grad():
        _, taps = extractor(x, ["bn1", "layer1"])
        bn1 = model.bn1(model.conv1(x))
        layer1 = model.layer1(model.maxpool(torch.relu(bn1)))
    assert bool((bn1 < 0).any())
    torch.testing.assert_close(taps["bn1"], bn1, rtol=0, atol=0)
    torch.testing.assert_close(taps["layer1"], layer1, rtol=0, atol=0)
    xs = torch.rand(9, 3, 32, 32)
    table = measure(model, (xs, torch.arange(9) % CLASSES), layers=["bn1", "layer4", "penultimate"],
                    views=["clean"], pool=2)  # fmt: skip
    assert list(table.layer.cat.categories) == ["bn1", "layer4", "penultimate", "output"]


# -- partial splits, ordering, attack statistics, help ------------------------------------------


def test_a_split_missing_a_class_returns_its_defined_metrics() -> None:
    torch.manual_seed(0)
    net = Net1D().eval()
    x, y = sequences(10, seed=8)
    xt, yt = sequences(4, seed=9)
    keep = yt != 2
    data = {"train": (x, y), "test": (xt[keep], yt[keep])}
    options = dict(layers=["conv2", "penultimate"], views=["clean", "pgd"], attack=ATTACK)
    with pytest.warns(UserWarning, match=r"class\(es\) 2 have no sample in the test split"):
        table = measure(net, data, **options)
    test = _rows(table, "test")
    assert {"accuracy", "loss"} <= set(test.loc["output"].index)
    assert set(test.loc["penultimate"].index) == {"ncc_accuracy", "ncc_match"}
    with torch.no_grad():
        h, ht = net.penultimate(x), net.penultimate(xt[keep])
        logits = net(xt[keep])
    means = torch.stack([h[y == k].double().mean(0) for k in range(CLASSES)])
    nearest = torch.cdist(ht.double(), means).argmin(1)
    assert test[("penultimate", "ncc_accuracy")] == pytest.approx(
        float((nearest == yt[keep]).double().mean())
    )
    assert test[("penultimate", "ncc_match")] == pytest.approx(
        float((nearest == logits.argmax(1)).double().mean())
    )
    missing = pd.DataFrame(table.attrs["missing"])
    assert set(missing.split) == {"test"} and set(missing.view) == {"clean", "pgd"}
    assert {"nc1", "nc4", "nc3", "simplex_similarity"} <= set(missing.metric)
    alone = measure(net, {"train": (x, y)}, **options)  # the train split is unaffected
    train = table[table.split == "train"]
    pd.testing.assert_series_equal(values(train), values(alone))


def test_layers_in_depth_order_and_attack_statistics() -> None:
    torch.manual_seed(0)
    net = Net1D().eval()
    x, y = sequences(6, seed=10)
    metrics, stats = measure(net, (x, y), layers=["penultimate", "conv1"],
                             attack=ATTACK, with_attack_stats=True)  # fmt: skip
    assert metrics.layer.cat.ordered
    assert list(metrics.layer.cat.categories) == ["conv1", "penultimate", "output"]
    assert list(metrics.sort_values("layer").layer.unique()) == ["conv1", "penultimate", "output"]
    assert set(stats.view) == {"pgd"} and set(stats.statistic) >= {"predicted_count"}
    counts = stats.query("statistic == 'predicted_count' and layer == 'penultimate'").value
    assert counts.sum() == pytest.approx(len(y))


def test_help_shows_every_option() -> None:
    signature = inspect.signature(measure)
    kinds = {p.kind for p in signature.parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds
    doc = inspect.getdoc(measure) or ""
    for name in list(signature.parameters):
        assert f"\n    {name}:" in doc or f"\n{name}:" in doc or f"    {name}: " in doc, name
    assert len(signature.parameters) >= 19
    assert "bounds" in signature.parameters and "output" in signature.parameters


def test_a_train_split_missing_a_class_leaves_the_test_split_its_own_metrics() -> None:
    torch.manual_seed(0)
    net = Net1D().eval()
    x, y = sequences(8, seed=11)
    xt, yt = sequences(4, seed=12)
    keep = y != 0
    with pytest.warns(UserWarning, match="no reference means"):
        table = measure(net, {"train": (x[keep], y[keep]), "test": (xt, yt)}, views=["clean"])
    train, test = _rows(table, "train"), _rows(table, "test")
    assert set(train.index.get_level_values("layer")) == {"output"}
    with torch.no_grad():
        direct = _direct(net.penultimate(xt), yt, net.head.weight, net.head.bias)
    for metric, value in direct.items():
        assert test[("penultimate", metric)] == pytest.approx(value, rel=1e-7, abs=1e-12)
    assert ("penultimate", "ncc_accuracy") not in test.index
    missing = pd.DataFrame(table.attrs["missing"]).query("split == 'test'")
    assert set(missing.metric) == {"ncc_accuracy", "ncc_match", "simplex_similarity",
                                   "angular_distance"}  # fmt: skip
