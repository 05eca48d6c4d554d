"""VGG11-BN and PreActResNet18: sizes, initialisation, taps (32 px and 160 px layouts)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ncrobust.models import PENULTIMATE, TappedClassifier, create_model

VGG_TAPS = [*(f"block{i}" for i in range(1, 8)), PENULTIMATE]
RESNET_TAPS = ["stem", "layer1", "layer2", "layer3", "layer4", PENULTIMATE]

SHAPES_32 = {
    "vgg11_bn": {
        "block1": (64, 16, 16),
        "block2": (128, 8, 8),
        "block3": (256, 8, 8),
        "block4": (256, 4, 4),
        "block5": (512, 4, 4),
        "block6": (512, 2, 2),
        "block7": (512, 2, 2),
        PENULTIMATE: (512,),
    },
    "preact_resnet18": {
        "stem": (64, 32, 32),
        "layer1": (64, 32, 32),
        "layer2": (128, 16, 16),
        "layer3": (256, 8, 8),
        "layer4": (512, 4, 4),
        PENULTIMATE: (512,),
    },
}
SHAPES_160 = {
    "vgg11_bn": {"block1": (64, 80, 80), "block7": (512, 10, 10), PENULTIMATE: (512,)},
    "preact_resnet18": {"stem": (64, 40, 40), "layer4": (512, 5, 5), PENULTIMATE: (512,)},
}


@pytest.fixture(scope="module")
def models_32() -> dict[str, TappedClassifier]:
    torch.manual_seed(0)
    return {
        name: create_model(name, num_classes=10, image_size=32).eval()
        for name in ("vgg11_bn", "preact_resnet18")
    }


@pytest.mark.parametrize(
    ("name", "image_size", "expected", "approx"),
    [
        ("vgg11_bn", 32, 9_231_114, 9.2e6),
        ("vgg11_bn", 160, 9_231_114, 9.2e6),
        ("preact_resnet18", 32, 11_172_170, 11.2e6),
        ("preact_resnet18", 160, 11_179_850, 11.2e6),
    ],
)
def test_parameter_counts(name: str, image_size: int, expected: int, approx: float) -> None:
    model = create_model(name, num_classes=10, image_size=image_size)
    count = sum(p.numel() for p in model.parameters())
    assert count == expected
    assert abs(count - approx) / approx < 0.01


@pytest.mark.parametrize(
    ("name", "taps"), [("vgg11_bn", VGG_TAPS), ("preact_resnet18", RESNET_TAPS)]
)
def test_layers_in_depth_order(models_32: dict, name: str, taps: list[str]) -> None:
    assert models_32[name].layers() == taps


@pytest.mark.parametrize("name", ["vgg11_bn", "preact_resnet18"])
def test_taps_at_32px(models_32: dict, name: str) -> None:
    model = models_32[name]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        logits, taps = model(x, taps=model.layers())
    assert torch.equal(plain, logits)
    assert {k: tuple(v.shape[1:]) for k, v in taps.items()} == SHAPES_32[name]
    assert torch.equal(model.classifier(taps[PENULTIMATE]), logits)
    assert model.classifier.weight.shape == (10, 512)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


@pytest.mark.parametrize("name", ["vgg11_bn", "preact_resnet18"])
def test_taps_survive_the_rest_of_the_network(models_32: dict, name: str) -> None:
    """A tap fed through the later stages gives the logits: no later stage edits it in place."""
    model = models_32[name]
    with torch.no_grad():
        logits, taps = model(torch.rand(2, 3, 32, 32), taps=model.layers())
        names = model.layers()
        for i, tap in enumerate(names[:-1]):
            h = taps[tap].clone()
            for later in names[i + 1 :]:
                h = model.stages[later](h)
            assert torch.allclose(model.classifier(h), logits, atol=1e-6, rtol=0), tap


@pytest.mark.parametrize("name", ["vgg11_bn", "preact_resnet18"])
def test_imagenette_layout_at_160px(name: str) -> None:
    model = create_model(name, num_classes=10, image_size=160, mean=[0.5] * 3, std=[0.5] * 3)
    model.eval()
    assert model.layout == "imagenette"
    wanted = list(SHAPES_160[name])
    with torch.no_grad():
        logits, taps = model(torch.rand(1, 3, 160, 160), taps=wanted)
    assert {k: tuple(v.shape[1:]) for k, v in taps.items()} == SHAPES_160[name]
    assert logits.shape == (1, 10)
    assert torch.equal(model.classifier(taps[PENULTIMATE]), logits)


def test_layout_follows_image_size() -> None:
    assert create_model("vgg11_bn", num_classes=10, image_size=64).layout == "cifar"
    assert create_model("preact_resnet18", num_classes=10, image_size=128).layout == "imagenette"


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def _fan(conv: nn.Conv2d, mode: str) -> int:
    k = conv.kernel_size[0] * conv.kernel_size[1]
    return k * (conv.in_channels if mode == "fan_in" else conv.out_channels)


@pytest.mark.parametrize(("image_size", "mode"), [(32, "fan_in"), (160, "fan_out")])
def test_vgg_init_as_released(image_size: int, mode: str) -> None:
    model = create_model("vgg11_bn", num_classes=10, image_size=image_size)
    convs = _convs(model)
    assert len(convs) == 8
    for conv in convs:
        expected = math.sqrt(2.0 / _fan(conv, mode))
        weight = conv.weight.detach()
        assert abs(weight.std().item() / expected - 1) < 0.1, conv
        assert abs(weight.mean().item()) < 4 * expected / math.sqrt(weight.numel())
        assert conv.bias is not None
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    head = model.classifier
    assert abs(head.weight.std().item() / 0.01 - 1) < 0.1
    assert torch.equal(head.bias, torch.zeros_like(head.bias))


def test_resnet_32px_keeps_pytorch_default_init(models_32: dict) -> None:
    """Default conv/linear init is uniform with bound 1/sqrt(fan_in), so std = bound/sqrt(3)."""
    model = models_32["preact_resnet18"]
    for layer in [*_convs(model), model.classifier]:
        weight = layer.weight.detach()
        bound = 1.0 / math.sqrt(weight[0].numel())
        assert weight.abs().max().item() <= bound
        assert abs(weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.15, layer


def test_resnet_160px_convs_are_he_normal_fan_out() -> None:
    model = create_model("preact_resnet18", num_classes=10, image_size=160)
    convs = _convs(model)
    assert convs[0].kernel_size == (7, 7) and convs[0].stride == (2, 2)
    for conv in convs:
        expected = math.sqrt(2.0 / _fan(conv, "fan_out"))
        assert abs(conv.weight.detach().std().item() / expected - 1) < 0.15, conv


def test_other_channel_counts_and_class_counts() -> None:
    model = create_model("preact_resnet18", num_classes=100, in_channels=1, image_size=28)
    logits, taps = model.eval()(torch.rand(2, 1, 28, 28), taps=[PENULTIMATE])
    assert logits.shape == (2, 100)
    assert taps[PENULTIMATE].shape == (2, 512)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["vgg11_bn", "preact_resnet18"])
def test_cuda_channels_last_bf16_autocast(name: str) -> None:
    device = torch.device("cuda")
    model = create_model(name, num_classes=10).to(device, memory_format=torch.channels_last)
    x = torch.rand(8, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, taps = model(x, taps=model.layers())
    logits.float().sum().backward()
    assert torch.isfinite(logits).all()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert taps[PENULTIMATE].shape == (8, 512)
