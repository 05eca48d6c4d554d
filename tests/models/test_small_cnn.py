"""small_cnn: the digits model trains to zero training error in seconds and takes other sizes."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from ncrobust.data import load_dataset
from ncrobust.models import PENULTIMATE, SmallCNN, create_model
from ncrobust.models.small_cnn import PoolTo


def test_layers_and_tap_shapes_on_digits_sized_input() -> None:
    model = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8).eval()
    assert isinstance(model, SmallCNN)
    assert model.layers() == ["block1", "block2", "block3", PENULTIMATE]
    with torch.no_grad():
        logits, taps = model(torch.rand(3, 1, 8, 8), taps=model.layers())
    shapes = {k: tuple(v.shape[1:]) for k, v in taps.items()}
    assert shapes == {
        "block1": (16, 8, 8),
        "block2": (32, 4, 4),
        "block3": (32, 4, 4),
        PENULTIMATE: (model.feature_dim,),
    }
    assert torch.equal(model.classifier(taps[PENULTIMATE]), logits)


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (3, 5)])
def test_other_small_inputs_through_adaptive_pooling(channels: int, size: int) -> None:
    model = create_model("small_cnn", num_classes=4, in_channels=channels, image_size=size)
    logits, taps = model.eval()(torch.rand(2, channels, size, size), taps=[PENULTIMATE])
    assert logits.shape == (2, 4)
    assert taps[PENULTIMATE].shape == (2, model.feature_dim)


@pytest.mark.parametrize("size", [4, 6, 14])
def test_pool_matches_adaptive_average_pooling(size: int) -> None:
    h = torch.rand(2, 3, size, size)
    assert torch.allclose(PoolTo(4)(h), F.adaptive_avg_pool2d(h, 4))


def test_bad_widths_are_refused() -> None:
    with pytest.raises(ValueError, match="three positive widths"):
        SmallCNN(10, widths=(16, 0, 32))


@pytest.fixture
def one_thread():
    """Tiny batches run fastest on one thread; several threads thrash on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_trains_to_zero_training_error_on_digits_in_seconds() -> None:
    """Plain SGD (lr 0.05, momentum 0.9, wd 5e-4, batch 128) fits the 1,437 digits quickly."""
    data = load_dataset("digits")
    x = data.train.images.float() / 255
    y = data.train.labels
    model = create_model(
        "small_cnn", num_classes=10, in_channels=1, image_size=8, mean=data.mean, std=data.std
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    accuracy, epochs = 0.0, 0
    while accuracy < 1.0 and epochs < 40:
        model.train()
        for batch in torch.randperm(len(y), generator=generator).split(128):
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        epochs += 1
        model.eval()
        with torch.no_grad():
            accuracy = (model(x).argmax(1) == y).float().mean().item()
    elapsed = time.perf_counter() - start
    print(f"small_cnn on digits: 100% train accuracy after {epochs} epochs, {elapsed:.1f} s")
    assert accuracy == 1.0, f"train accuracy {accuracy:.4f} after {epochs} epochs"
