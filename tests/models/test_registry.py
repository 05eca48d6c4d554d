"""The model registry: names, construction from plain arguments, and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ncrobust.errors import UsageError
from ncrobust.models import (
    PENULTIMATE,
    TappedClassifier,
    available_models,
    create_model,
    register_model,
)
from ncrobust.models import registry as registry_module

PAPER_AND_DEMO = ["preact_resnet18", "small_cnn", "vgg11_bn"]


def test_available_models_lists_the_builtin_models_sorted() -> None:
    names = available_models()
    assert set(PAPER_AND_DEMO) <= set(names)
    assert names == sorted(names)


def test_unknown_name_is_a_usage_error_listing_the_models() -> None:
    with pytest.raises(UsageError, match=r"unknown model 'resnet9'.*vgg11_bn"):
        create_model("resnet9", num_classes=10)


def test_unknown_name_suggests_the_closest_model() -> None:
    with pytest.raises(UsageError, match=r"did you mean 'vgg11_bn'"):
        create_model("vgg11bn", num_classes=10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, "num_classes must be at least 2"),
        ({"num_classes": 0}, "num_classes must be at least 2"),
        ({"num_classes": 2.5}, "num_classes must be an integer"),
        ({"num_classes": True}, "num_classes must be an integer"),
        ({"num_classes": "10"}, "num_classes must be an integer"),
        ({"num_classes": 10, "in_channels": 0}, "in_channels must be at least 1"),
        ({"num_classes": 10, "image_size": 2}, "image_size 2 is too small"),
        ({"num_classes": 10, "mean": [0.5, 0.5]}, "mean has 2 values but in_channels is 1"),
        ({"num_classes": 10, "std": [0.0]}, "std must be positive"),
        ({"num_classes": 10, "std": [float("nan")]}, "std must be finite"),
    ],
)
def test_bad_arguments_raise_value_errors_before_building(kwargs: dict, message: str) -> None:
    arguments = {"in_channels": 1, "image_size": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        create_model("small_cnn", **arguments)


@pytest.mark.parametrize(("name", "too_small"), [("vgg11_bn", 15), ("preact_resnet18", 7)])
def test_paper_models_refuse_images_smaller_than_their_pooling(name: str, too_small: int) -> None:
    with pytest.raises(ValueError, match=rf"{name}: image_size {too_small} is too small"):
        create_model(name, num_classes=10, image_size=too_small)


def test_numpy_integers_are_accepted() -> None:
    model = create_model(
        "small_cnn", num_classes=np.int64(3), in_channels=np.int64(1), image_size=np.int64(8)
    )
    assert model.classifier.out_features == 3
    assert model.in_channels == 1


def test_registered_builder_is_created_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    @register_model("tiny_linear")
    def tiny_linear(*, num_classes, in_channels, image_size, mean, std) -> TappedClassifier:
        stages = [(PENULTIMATE, nn.Flatten())]
        head = nn.Linear(in_channels * image_size * image_size, num_classes)
        return TappedClassifier(stages, head, in_channels=in_channels, mean=mean, std=std)

    assert "tiny_linear" in available_models()
    model = create_model("tiny_linear", num_classes=4, in_channels=2, image_size=3)
    logits, taps = model(torch.rand(5, 2, 3, 3), taps=[PENULTIMATE])
    assert logits.shape == (5, 4)
    assert taps[PENULTIMATE].shape == (5, 18)


def test_registering_a_taken_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    with pytest.raises(ValueError, match="'small_cnn' is already registered"):
        register_model("small_cnn")(lambda **_: None)


def test_empty_model_name_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        register_model("")
