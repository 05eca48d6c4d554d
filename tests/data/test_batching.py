"""batches(): coverage of every index, reproducible shuffles, drop_last and augmentation."""

from __future__ import annotations

import pytest
import torch

from ncrobust.data import Split, batches, num_batches
from ncrobust.data.batching import crop_flip


def _indexed_split(n: int) -> Split:
    """Image i holds the value i % 256 everywhere and has label i, to trace sample identity."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 2, 3, 3)
    return Split(images.contiguous(), torch.arange(n))


def _epoch_labels(split: Split, **kwargs: object) -> list[int]:
    return torch.cat([y for _, y in batches(split, **kwargs)]).tolist()  # type: ignore[arg-type]


def test_every_index_exactly_once_and_pixels_follow_labels() -> None:
    split = _indexed_split(103)
    seen = []
    generator = torch.Generator().manual_seed(0)
    for x, y in batches(split, 16, shuffle=True, generator=generator):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x[:, 0, 0, 0], (y % 256).float() / 255)  # images stay with labels
        seen.extend(y.tolist())
    assert sorted(seen) == list(range(103))
    assert seen != list(range(103))  # actually shuffled


def test_same_seed_same_order_other_seed_other_order() -> None:
    split = _indexed_split(64)

    def order(seed: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return _epoch_labels(split, batch_size=10, shuffle=True, generator=generator)

    assert order(1) == order(1)
    assert order(1) != order(2)
    generator = torch.Generator().manual_seed(1)
    first = _epoch_labels(split, batch_size=10, shuffle=True, generator=generator)
    second = _epoch_labels(split, batch_size=10, shuffle=True, generator=generator)
    assert first == order(1) and second != first  # the generator advances between epochs


def test_permutation_is_the_cpu_randperm_of_the_generator() -> None:
    split = _indexed_split(50)
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(7)).tolist()
    generator = torch.Generator().manual_seed(7)
    assert _epoch_labels(split, batch_size=8, shuffle=True, generator=generator) == expected


def test_unshuffled_order_batch_sizes_and_drop_last() -> None:
    split = _indexed_split(25)
    sizes = [len(y) for _, y in batches(split, 10, shuffle=False)]
    assert sizes == [10, 10, 5] and num_batches(25, 10) == 3
    assert _epoch_labels(split, batch_size=10, shuffle=False) == list(range(25))
    dropped = [len(y) for _, y in batches(split, 10, shuffle=False, drop_last=True)]
    assert dropped == [10, 10] and num_batches(25, 10, drop_last=True) == 2
    assert num_batches(20, 10, drop_last=True) == num_batches(20, 10) == 2
    assert list(batches(_indexed_split(0), 4, shuffle=True)) == []
    assert [len(y) for _, y in batches(split, 100, shuffle=True, drop_last=True)] == []


def test_bad_arguments_raise_before_iterating() -> None:
    split = _indexed_split(5)
    with pytest.raises(ValueError, match="batch_size"):
        batches(split, 0, shuffle=False)
    with pytest.raises(ValueError, match="batch_size"):
        num_batches(5, 0)
    with pytest.raises(ValueError, match="n must be"):
        num_batches(-1, 4)
    with pytest.raises(ValueError, match="Split"):
        batches(split.images, 2, shuffle=False)  # type: ignore[arg-type]
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="CPU generator"):
            batches(split, 2, shuffle=True, generator=torch.Generator(device="cuda"))


def test_crop_flip_matches_explicit_per_image_reference() -> None:
    images = torch.randint(0, 256, (6, 3, 5, 7), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [4, 4], [8, 8], [2, 7], [8, 0], [3, 1]])
    flips = torch.tensor([False, True, False, True, True, False])
    out = crop_flip(images, offsets, flips, padding=4)
    for i in range(6):
        padded = torch.zeros(3, 13, 15, dtype=torch.uint8)
        padded[:, 4:9, 4:11] = images[i]
        top, left = offsets[i].tolist()
        crop = padded[:, top : top + 5, left : left + 7]
        expected = crop.flip(2) if flips[i] else crop
        assert torch.equal(out[i], expected), i
    assert torch.equal(out[1], images[1].flip(2))  # centred offset + flip = mirror image


def test_augment_keeps_shape_range_labels_and_is_reproducible() -> None:
    split = Split(torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8), torch.arange(40) % 4)

    def epoch(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(seed)
        return list(batches(split, 16, shuffle=True, generator=generator, augment=True))

    first, again, other = epoch(3), epoch(3), epoch(4)
    for (x, y), (x2, y2) in zip(first, again, strict=True):
        assert x.shape[1:] == (3, 8, 8) and x.min() >= 0 and x.max() <= 1
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    plain = next(iter(batches(split, 40, shuffle=False)))[0]
    augmented = next(iter(batches(split, 40, shuffle=False, augment=True)))[0]
    assert not torch.equal(plain, augmented)  # some crops moved or flipped
    # with shuffling off the permutation is not drawn, so augmentation uses the generator alone
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = next(iter(batches(split, 40, shuffle=False, generator=g1, augment=True)))[0]
    b = next(iter(batches(split, 40, shuffle=False, generator=g2, augment=True)))[0]
    assert torch.equal(a, b)


@pytest.mark.gpu
def test_cuda_epoch_equals_cpu_epoch() -> None:
    split = Split(torch.randint(0, 256, (70, 3, 8, 8), dtype=torch.uint8), torch.arange(70) % 7)
    on_cpu = list(
        batches(split, 32, shuffle=True, generator=torch.Generator().manual_seed(9), augment=True)
    )
    on_gpu = list(
        batches(
            split.to("cuda"),
            32,
            shuffle=True,
            generator=torch.Generator().manual_seed(9),
            augment=True,
        )
    )
    for (x, y), (xg, yg) in zip(on_cpu, on_gpu, strict=True):
        assert xg.is_cuda and torch.equal(x, xg.cpu()) and torch.equal(y, yg.cpu())


def test_pixels_are_the_cpu_quotients_on_every_device() -> None:
    """uint8 -> float is a table of CPU quotients, so a CUDA epoch cannot differ in the last bit
    (CUDA divides by a scalar through its reciprocal); on the CPU it equals x / 255."""
    from ncrobust.data.containers import to_pixels

    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(to_pixels(values, "cpu"), values.float() / 255.0)
    assert torch.equal(to_pixels(values, "cpu", torch.float64), values.double() / 255.0)
    reciprocal = values.float() * (1 / 255.0)
    assert not torch.equal(reciprocal, values.float() / 255.0)  # why a table, not x * (1/255)
    if torch.cuda.is_available():
        assert torch.equal(to_pixels(values, "cuda").cpu(), to_pixels(values, "cpu"))
