"""Randomly initialised timm and Hugging Face models (no download) measured with the arguments a
user would pass: the penultimate features must be the library's own pre-logits / pooled output."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ncrobust.errors import UsageError
from ncrobust.probing import AttackSettings, measure

from .conftest import CLASSES, assert_penultimate

timm = pytest.importorskip("timm")

TIMM_MODELS = {
    "resnet18": dict(layers=(1, 1, 1, 1)),
    "vit_tiny_patch16_224": dict(img_size=32, patch_size=8, depth=2),
    "convnext_atto": dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)),
}


def _labelled(x: Tensor) -> Tensor:
    return torch.arange(x.shape[0]) % CLASSES


@pytest.mark.parametrize("name", list(TIMM_MODELS))
def test_timm_models_measure_their_own_pre_logits(name: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=CLASSES, **TIMM_MODELS[name])
    model.eval()
    x = torch.rand(18, 3, 32, 32)
    y = _labelled(x)
    table = measure(model, (x, y), views=["clean"])
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model(x)
    head = model.get_classifier()
    assert isinstance(head, nn.Linear)
    assert_penultimate(table, feats, y, head.weight, head.bias, logits)


def test_a_timm_resnet_under_pgd_with_per_channel_bounds() -> None:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=CLASSES, layers=(1,) * 4)
    x = torch.rand(9, 3, 32, 32)
    table = measure(
        model.eval(),
        (x, _labelled(x)),
        views=["clean", "pgd"],
        bounds=(torch.zeros(3), torch.ones(3)),
        attack=AttackSettings(eps=4 / 255, alpha=2 / 255, steps=1),
    )
    assert set(table.view) == {"clean", "pgd"}


def test_a_tiny_bert_sequence_classifier_measures_its_pooled_output() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=CLASSES,
    )
    model = transformers.BertForSequenceClassification(config).eval()
    ids = torch.randint(0, 50, (18, 8))
    y = _labelled(ids)
    with pytest.raises(UsageError, match=r"integers .* cannot be perturbed .* views=\['clean'\]"):
        measure(model, (ids, y))
    table = measure(model, (ids, y), views=["clean"])
    with torch.no_grad():
        pooled = model.bert(ids).pooler_output
        logits = model(ids).logits
    head = model.classifier
    assert_penultimate(table, pooled, y, head.weight, head.bias, logits)
