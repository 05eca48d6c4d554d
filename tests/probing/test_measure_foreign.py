"""Foreign models as users write them: each is measured right (against features computed
directly) or refused with a UsageError, never a silently wrong number nor another exception."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ncrobust.errors import UsageError
from ncrobust.probing import AttackSettings, list_layers, measure

from .conftest import ATTACK, CLASSES, assert_penultimate, values


def _data(n: int = 24, d: int = 12, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    centres = torch.rand(CLASSES, d, generator=g)
    x = (centres[y] + 0.15 * torch.rand(n, d, generator=g)).clamp(0, 1)
    return x, y


def _outcome(call: Callable[[], Any]) -> Any:
    """The call's result, or its UsageError; any other exception fails the test."""
    try:
        return call()
    except UsageError as exc:
        return exc


class Body(nn.Module):
    """[N, d] -> [N, 8] features."""

    def __init__(self, d: int = 12, p: int = 8, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.fc = nn.Linear(d, p, dtype=dtype)
        self.act = nn.Tanh()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.fc(x))


class AuxAfterHead(nn.Module):
    """Deep supervision: an auxiliary head on an earlier feature runs after the main head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Body()
        self.deep = nn.Linear(8, 8)
        self.head = nn.Linear(8, CLASSES)
        self.aux = nn.Linear(8, CLASSES)
        self.aux_out: Tensor | None = None

    def features(self, x: Tensor) -> Tensor:
        return torch.relu(self.deep(self.body(x)))

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(self.features(x))
        self.aux_out = self.aux(self.body(x))  # the last Linear executed, not the classifier
        return logits


class CosineHead(nn.Module):
    """s · normalize(h) @ normalize(W).T."""

    def __init__(self, p: int, classes: int, scale: float = 10.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, p))
        self.scale = scale

    def forward(self, h: Tensor) -> Tensor:
        return F.normalize(h, dim=1) @ F.normalize(self.weight, dim=1).T * self.scale


class ProjectedCosine(nn.Module):
    """A Linear projection, then a cosine classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Body()
        self.project = nn.Linear(8, 6)
        self.head = CosineHead(6, CLASSES)

    def features(self, x: Tensor) -> Tensor:
        return self.project(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class FeaturesAndLogits(nn.Module):
    """Returns (features, logits), as many contrastive codebases do."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Body()
        self.head = nn.Linear(8, CLASSES)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return h, self.head(h)


class TwoHeads(nn.Module):
    """A dict with two [N, C] score tensors: which one is the logits is the user's call."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Body()
        self.main = nn.Linear(8, CLASSES)
        self.aux = nn.Linear(8, CLASSES)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.body(x)
        return {"embedding": h, "main": self.main(h), "aux": self.aux(h)}


class Ensemble(nn.Module):
    """Logits summed outside any module from two heads: no single classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Body()
        self.a = nn.Linear(8, CLASSES)
        self.b = nn.Linear(8, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x)
        return self.a(h) + self.b(h)


class TokenBag(nn.Module):
    """Token ids [N, L] -> mean embedding -> Linear; casts its ids itself."""

    def __init__(self, vocab: int = 40) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 8)
        self.head = nn.Linear(8, CLASSES)

    def features(self, ids: Tensor) -> Tensor:
        return self.embed(ids.long()).mean(1)

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(self.features(ids))


class Tempered(FeaturesAndLogits):
    """Logits divided by a temperature outside any module."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.head(self.body(x)) / 2.0


class Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = Body()
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x) / (x[:, :1] > 2).float())  # 0/0 and 1/0


def _measured_right(model: nn.Module, x: Tensor, y: Tensor, head: nn.Module) -> None:
    table = _outcome(lambda: measure(model.eval(), (x, y), views=["clean"]))
    assert isinstance(table, pd.DataFrame), table
    with torch.no_grad():
        feats, logits = model.features(x), model(x)
    if isinstance(logits, tuple):
        logits = logits[1]
    assert_penultimate(table, feats, y, head.weight, getattr(head, "bias", None), logits)
    accuracy = table[(table.layer == "output") & (table.metric == "accuracy")].value.item()
    assert accuracy == pytest.approx(float((logits.argmax(1) == y).double().mean()))


def test_an_auxiliary_head_after_the_classifier() -> None:
    torch.manual_seed(0)
    model = AuxAfterHead()
    _measured_right(model, *_data(), model.head)


def test_a_cosine_classifier_after_a_projection() -> None:
    torch.manual_seed(0)
    model = ProjectedCosine()
    _measured_right(model, *_data(), model.head)
    listed = list_layers(model, _data()[0])
    assert listed.set_index("layer").loc["penultimate", "module"] == "input of head"
    assert "project" in set(listed.layer)


def test_a_features_and_logits_tuple() -> None:
    torch.manual_seed(0)
    model = FeaturesAndLogits()
    _measured_right(model, *_data(), model.head)


def test_logits_scaled_outside_the_modules_are_measured_with_a_note() -> None:
    torch.manual_seed(0)
    model = Tempered()
    with pytest.warns(UserWarning, match="computed outside the model's modules; 'head'"):
        _measured_right(model, *_data(), model.head)


def test_two_score_tensors_are_refused_until_output_names_one() -> None:
    torch.manual_seed(0)
    model, (x, y) = TwoHeads().eval(), _data()
    refused = _outcome(lambda: measure(model, (x, y), views=["clean"]))
    assert isinstance(refused, UsageError)
    assert "'main': [2, 3]" in str(refused) and "'aux'" in str(refused)
    assert "output=" in str(refused)
    broken = _outcome(lambda: measure(model, (x, y), views=["clean"], output=lambda o: o["x"]))
    assert isinstance(broken, UsageError) and "KeyError" in str(broken)
    table = measure(model, (x, y), views=["clean"], output="main")
    with torch.no_grad():
        out = model(x)
    assert_penultimate(table, out["embedding"], y, model.main.weight, model.main.bias, out["main"])


def test_logits_summed_outside_the_modules_are_refused() -> None:
    torch.manual_seed(0)
    refused = _outcome(lambda: measure(Ensemble().eval(), _data(), views=["clean"]))
    assert isinstance(refused, UsageError)
    assert "ambiguous" in str(refused) and "classifier=" in str(refused)
    assert "'a'" in str(refused) and "'b'" in str(refused)


def test_integer_token_ids_are_not_read_as_pixels() -> None:
    torch.manual_seed(0)
    model = TokenBag().eval()
    ids = torch.randint(0, 40, (24, 6), generator=torch.Generator().manual_seed(1))
    y = torch.arange(24) % CLASSES
    _measured_right(model, ids, y, model.head)
    as_uint8 = measure(model, (ids.to(torch.uint8), y), views=["clean"])
    as_long = measure(model, (ids, y), views=["clean"])
    pd.testing.assert_series_equal(values(as_uint8), values(as_long))
    refused = _outcome(lambda: measure(model, (ids, y), views=["clean", "pgd"], attack=ATTACK))
    assert isinstance(refused, UsageError) and "views=['clean']" in str(refused)
    normalized = _outcome(lambda: measure(model, (ids, y), views=["clean"], normalize=(0, 1)))
    assert isinstance(normalized, UsageError) and "integers" in str(normalized)


def test_a_float64_model_keeps_float64_features_between_passes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8, dtype=torch.float64), nn.Linear(8, CLASSES))
    model = model.double().eval()
    x, y = _data(36)
    # nearly collapsed features: a large class offset, a tiny within-class spread
    x = x.double()
    with torch.no_grad():
        model[0].weight.mul_(1e3)
    table = measure(model, (x, y), views=["clean"], bounds=None, cache_mb=64)
    with torch.no_grad():
        feats, logits = model[0](x), model(x)
    assert_penultimate(table, feats, y, model[1].weight, model[1].bias, logits, rel=1e-10)


class DictSamples(Dataset):  # type: ignore[type-arg]
    def __init__(self, x: Tensor, y: Tensor, keys: tuple[str, str] = ("image", "label")) -> None:
        self.x, self.y, self.keys = x, y, keys

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {self.keys[0]: self.x[i], self.keys[1]: int(self.y[i]), "index": i}


def test_dict_sample_datasets_and_drop_last_loaders() -> None:
    torch.manual_seed(0)
    model = FeaturesAndLogits().eval()
    x, y = _data(25)
    direct = values(measure(model, (x, y), views=["clean"], batch_size=8))
    streamed = measure(model, DictSamples(x, y), views=["clean"], batch_size=8)
    pd.testing.assert_series_equal(values(streamed), direct)
    odd = _outcome(lambda: measure(model, DictSamples(x, y, ("pixels", "cls")), views=["clean"]))
    assert isinstance(odd, UsageError) and "'cls'" in str(odd) and "label_key=" in str(odd)
    keyed = DictSamples(x, y, ("pixels", "cls"))
    named = measure(
        model, keyed, views=["clean"], batch_size=8, input_key="pixels", label_key="cls"
    )
    pd.testing.assert_series_equal(values(named), direct)
    dropping = DataLoader(TensorDataset(x, y), batch_size=8, drop_last=True)
    refused = _outcome(lambda: measure(model, dropping, views=["clean"]))
    assert isinstance(refused, UsageError) and "leaves out 1 of 25" in str(refused)
    whole = DataLoader(TensorDataset(x[:24], y[:24]), batch_size=8, drop_last=True)
    assert isinstance(_outcome(lambda: measure(model, whole, views=["clean"])), pd.DataFrame)


def test_per_channel_bounds_with_a_perturbed_view() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, CLASSES))
    x = torch.rand(12, 3, 8, 8) * 0.5
    y = torch.arange(12) % CLASSES
    box = (torch.zeros(3), torch.full((3,), 0.5))
    table = _outcome(lambda: measure(model.eval(), (x, y), bounds=box, attack=ATTACK))
    assert isinstance(table, pd.DataFrame), table
    assert {"clean", "pgd"} <= set(table.view)


def test_non_finite_features_name_layer_split_and_view() -> None:
    refused = _outcome(lambda: measure(Exploding().eval(), _data(), views=["clean"]))
    assert isinstance(refused, UsageError)
    assert "'penultimate'" in str(refused) and "'train'" in str(refused)
    assert "'clean'" in str(refused)


class NaNAbove(FeaturesAndLogits):
    """Features turn NaN for inputs above 2 (only the test split has them)."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        h = self.body(x) * torch.where(x[:, :1] > 2, float("nan"), 1.0)
        return self.head(h)


def test_non_finite_features_of_a_split_missing_a_class_are_named() -> None:
    x, y = _data()
    test = (x[y < 2] + 5, y[y < 2])  # class 2 absent: NCC against the train means only
    data = {"train": (x, y), "test": test}
    refused = _outcome(lambda: measure(NaNAbove().eval(), data, views=["clean"], bounds=None))
    assert isinstance(refused, UsageError)
    assert "'penultimate' of split 'test', view 'clean'" in str(refused)


def test_a_pixel_level_eps_without_bounds_is_refused() -> None:
    model = FeaturesAndLogits().eval()
    attack = AttackSettings(eps=8, alpha=2, steps=1)
    refused = _outcome(lambda: measure(model, _data(), bounds=None, attack=attack))
    assert isinstance(refused, UsageError) and "8/255" in str(refused)


def test_per_class_tables_come_with_the_result() -> None:
    torch.manual_seed(0)
    x, y = _data(25)
    table = measure(FeaturesAndLogits().eval(), (x, y), views=["clean"])
    per_class = pd.DataFrame(table.attrs["per_class"])
    assert {"epoch", "split", "view", "layer", "class", "metric", "value"} <= set(per_class)
    counts = per_class[per_class.metric == "count"].sort_values("class").value.tolist()
    assert counts == torch.bincount(y, minlength=CLASSES).tolist()
