"""TappedClassifier behaviour shared by every model: taps, normalisation, input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ncrobust.errors import UsageError
from ncrobust.models import PENULTIMATE, TappedClassifier, create_model


def _small(**kwargs: object) -> TappedClassifier:
    arguments: dict = {"num_classes": 10, "in_channels": 1, "image_size": 8, **kwargs}
    return create_model("small_cnn", **arguments).eval()


def test_taps_come_from_the_same_pass_as_the_logits() -> None:
    model = _small()
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        plain = model(x)
        logits, taps = model(x, taps=model.layers())
    assert torch.equal(plain, logits)
    assert list(taps) == model.layers()
    assert torch.equal(model.classifier(taps[PENULTIMATE]), logits)


def test_a_subset_of_taps_returns_only_that_subset() -> None:
    model = _small()
    _, taps = model(torch.rand(2, 1, 8, 8), taps=["block2", PENULTIMATE])
    assert set(taps) == {"block2", PENULTIMATE}
    _, none = model(torch.rand(2, 1, 8, 8), taps=[])
    assert none == {}


def test_a_single_tap_name_string_is_one_tap() -> None:
    _, taps = _small()(torch.rand(2, 1, 8, 8), taps="block1")
    assert list(taps) == ["block1"]


def test_unknown_tap_is_a_value_error_listing_the_valid_taps() -> None:
    model = _small()
    assert issubclass(UsageError, ValueError)  # a typo in a config's layer list reads as usage
    with pytest.raises(UsageError, match=r"unknown tap\(s\) \['fc7'\].*'block1'.*'penultimate'"):
        model(torch.rand(2, 1, 8, 8), taps=["block1", "fc7"])


def test_tapping_registers_no_hooks() -> None:
    model = _small()
    model(torch.rand(2, 1, 8, 8), taps=model.layers())
    for module in model.modules():
        assert not module._forward_hooks
        assert not module._forward_pre_hooks
        assert not module._backward_hooks
    assert not nn.modules.module._global_forward_hooks


def test_taps_are_not_modified_by_later_stages() -> None:
    """Feeding a tap through the remaining stages reproduces the logits (no in-place damage)."""
    model = _small()
    with torch.no_grad():
        logits, taps = model(torch.rand(4, 1, 8, 8), taps=model.layers())
        names = model.layers()
        for i, name in enumerate(names):
            h = taps[name].clone()
            for later in names[i + 1 :]:
                h = model.stages[later](h)
            assert torch.equal(model.classifier(h), logits), name


def test_normalisation_happens_inside_forward() -> None:
    mean, std = [0.3], [0.2]
    normalising = _small(mean=mean, std=std)
    plain = _small()
    state = {k: v for k, v in normalising.state_dict().items() if k not in ("mean", "std")}
    plain.load_state_dict(state, strict=False)
    assert normalising.mean.shape == (1, 1, 1, 1)
    x = torch.rand(5, 1, 8, 8)
    m, s = torch.tensor(mean).reshape(1, 1, 1, 1), torch.tensor(std).reshape(1, 1, 1, 1)
    with torch.no_grad():
        assert torch.allclose(normalising(x), plain((x - m) / s), atol=1e-6, rtol=0)
        assert not torch.allclose(normalising(x), plain(x), atol=1e-3)


def test_normalisation_defaults_to_identity() -> None:
    model = _small()
    assert torch.equal(model.mean, torch.zeros(1, 1, 1, 1))
    assert torch.equal(model.std, torch.ones(1, 1, 1, 1))


def test_normalisation_constants_travel_with_the_state_dict() -> None:
    state = _small(mean=[0.1], std=[0.4]).state_dict()
    assert torch.allclose(state["std"], torch.tensor(0.4).reshape(1, 1, 1, 1))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.rand(2, 3, 8, 8), r"expected input of shape \[B, 1, H, W\], got \[2, 3, 8, 8\]"),
        (torch.rand(1, 8, 8), r"expected input of shape \[B, 1, H, W\]"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "expected float pixels in \\[0, 1\\]"),
    ],
)
def test_bad_inputs_are_refused(x: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _small()(x)


def test_input_gradients_flow_for_attacks() -> None:
    model = _small().train()
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    logits, taps = model(x, taps=["block1"])
    (logits.sum() + taps["block1"].sum()).backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_custom_stages_make_a_tapped_classifier() -> None:
    stages = [("conv", nn.Conv2d(2, 4, 3)), (PENULTIMATE, nn.Flatten())]
    model = TappedClassifier(stages, nn.Linear(4 * 3 * 3, 3), in_channels=2, mean=[0.5, 0.5])
    logits, taps = model(torch.rand(2, 2, 5, 5), taps=model.layers())
    assert model.layers() == ["conv", PENULTIMATE]
    assert taps["conv"].shape == (2, 4, 3, 3)
    assert logits.shape == (2, 3)
    assert model.feature_dim == 36
    assert model.num_classes == 3


@pytest.mark.parametrize(
    ("stages", "head", "message"),
    [
        ([("features", nn.Flatten())], nn.Linear(4, 2), "last stage must be named 'penultimate'"),
        ([], nn.Linear(4, 2), "last stage must be named 'penultimate'"),
        (
            [(PENULTIMATE, nn.Flatten()), (PENULTIMATE, nn.Flatten())],
            nn.Linear(4, 2),
            "stage names must be unique",
        ),
        ([(PENULTIMATE, nn.Flatten())], nn.Conv2d(4, 2, 1), "classifier must be an nn.Linear"),
    ],
)
def test_malformed_custom_models_are_refused(stages: list, head: nn.Module, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TappedClassifier(stages, head, in_channels=1)  # type: ignore[arg-type]


def test_channels_last_and_cpu_bf16_autocast_run() -> None:
    model = _small(in_channels=3, image_size=32).to(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = model(x.contiguous())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, taps = model(x, taps=model.layers())
    assert torch.isfinite(logits).all()
    assert torch.allclose(logits.float(), reference, atol=0.1, rtol=0.1)
    assert taps[PENULTIMATE].shape == (4, model.feature_dim)
