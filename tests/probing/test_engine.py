"""Probes agree with a direct computation, with and without the feature cache."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from ncrobust.attacks import gaussian, pgd
from ncrobust.collapse import class_means, collapse_metrics
from ncrobust.data import Split, synthetic_dataset
from ncrobust.models import create_model
from ncrobust.probing.engine import PerturbedSet, Prober, ProbeSpec, derive_seed, tapped_extractor
from ncrobust.runtime import make_generator
from ncrobust.views import probe_plan, view_radii

LAYERS = ["block2", "penultimate"]


@pytest.fixture(scope="module")
def setting() -> tuple[torch.nn.Module, Split, Split]:
    torch.manual_seed(0)
    data = synthetic_dataset(4, (1, 8, 8), n_per_class=24, test_per_class=8, seed=3)
    model = create_model("small_cnn", num_classes=4, in_channels=1, image_size=8).eval()
    return model, data.train, data.test


def _prober(model: torch.nn.Module, plan: list[tuple[str, str]], cache_bytes: int) -> Prober:
    spec = ProbeSpec(
        plan=plan,
        layers=LAYERS,
        norm="linf",
        eps=0.1,
        alpha=0.03,
        steps=3,
        gaussian_std=0.05,
        batch_size=40,
        cache_bytes=cache_bytes,
        seed=5,
    )
    head = model.classifier
    return Prober(
        model,
        tapped_extractor(model),
        spec,
        4,
        head.weight,
        head.bias,
        torch.device("cpu"),
    )


def _table(rows: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows).set_index(["split", "view", "layer", "metric"]).value


def _direct(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    layer: str,
    reference: torch.Tensor | None,
) -> dict[str, float]:
    with torch.no_grad():
        logits, taps = model(x, taps=[layer])
    head = model.classifier
    return collapse_metrics(
        taps[layer].flatten(1),
        y,
        4,
        weight=head.weight if layer == "penultimate" else None,
        bias=head.bias if layer == "penultimate" else None,
        reference_means=reference,
        logits=logits,
    )


@pytest.mark.parametrize("cache_bytes", [2 << 30, 0])
def test_views_equal_direct_computation(setting, cache_bytes: int) -> None:  # type: ignore[no-untyped-def]
    model, train, test = setting
    plan = [("train", "clean"), ("train", "gaussian"), ("test", "pgd"), ("test", "targeted")]
    table = _table(_prober(model, plan, cache_bytes).run({"train": train, "test": test}, 3).metrics)
    x_train, x_test = train.images.float() / 255, test.images.float() / 255
    for layer in LAYERS:
        with torch.no_grad():
            reference = class_means(
                model(x_train, taps=[layer])[1][layer].flatten(1), train.labels, 4
            )
        expected = {("train", "clean"): _direct(model, x_train, train.labels, layer, None)}
        g = make_generator(derive_seed(5, 3, "train", "gaussian"))  # one draw per batch of 40
        noisy = torch.cat(
            [gaussian(x_train[i : i + 40], 0.05, generator=g) for i in range(0, 96, 40)]
        )
        expected[("train", "gaussian")] = _direct(model, noisy, train.labels, layer, reference)
        g = make_generator(derive_seed(5, 3, "test", "pgd"))
        adv = pgd(model, x_test, test.labels, eps=0.1, alpha=0.03, steps=3, generator=g)
        expected[("test", "pgd")] = _direct(model, adv, test.labels, layer, reference)
        g = make_generator(derive_seed(5, 3, "test", "targeted"))
        target = (test.labels + 1) % 4
        adv_t = pgd(
            model, x_test, test.labels, eps=0.1, alpha=0.03, steps=3, targeted=True, generator=g
        )
        expected[("test", "targeted")] = _direct(
            model, adv_t, target, layer, reference
        )  # by target
        for (split, view), values in expected.items():
            for metric, value in values.items():
                assert table[(split, view, layer, metric)] == pytest.approx(
                    value, rel=1e-6, abs=1e-9
                )


def test_train_adv_view_and_accuracy_only(setting) -> None:  # type: ignore[no-untyped-def]
    model, train, test = setting
    x = train.images.float() / 255
    perturbed = PerturbedSet((x + 0.05).clamp(0, 1), train.labels)
    spec = ProbeSpec(
        plan=[("train", "clean"), ("train", "train_adv")],
        layers=["penultimate"],
        norm="linf",
        eps=0.1,
        alpha=0.03,
        steps=2,
        accuracy_only=[("test", "pgd")],
    )
    head = model.classifier
    result = Prober(
        model,
        tapped_extractor(model),
        spec,
        4,
        head.weight,
        head.bias,
        torch.device("cpu"),
    ).run({"train": train, "test": test}, 0, perturbed)
    table = _table(result.metrics)
    with torch.no_grad():
        reference = class_means(model(x, taps=["penultimate"])[1]["penultimate"], train.labels, 4)
    direct = _direct(model, perturbed.inputs, train.labels, "penultimate", reference)
    for metric, value in direct.items():
        assert table[("train", "train_adv", "penultimate", metric)] == pytest.approx(
            value, rel=1e-6, abs=1e-9
        )
    test_rows = table.xs("test", level="split")
    assert set(test_rows.index.get_level_values("layer")) == {"output"}  # no NC for accuracy-only
    assert {"accuracy", "loss", "kl"} >= set(test_rows.index.get_level_values("metric"))
    assert model.training is False


def test_view_with_its_own_radius_equals_pgd_at_that_radius(setting) -> None:  # type: ignore[no-untyped-def]
    model, train, test = setting
    plan = probe_plan(["clean@train", "pgd@test", "targeted@test@eps=0.2"], ["train", "test"])
    assert plan == [("train", "clean"), ("test", "pgd"), ("test", "targeted@eps=0.2")]
    spec = ProbeSpec(
        plan=plan,
        layers=["penultimate"],
        norm="linf",
        eps=0.1,
        alpha=0.03,
        steps=3,
        batch_size=40,
        seed=5,
        radii=view_radii(["targeted@test@eps=0.2"]),
    )
    head = model.classifier
    prober = Prober(
        model, tapped_extractor(model), spec, 4, head.weight, head.bias, torch.device("cpu")
    )
    table = _table(prober.run({"train": train, "test": test}, 3).metrics)
    x_train, x_test = train.images.float() / 255, test.images.float() / 255
    with torch.no_grad():
        features = model(x_train, taps=["penultimate"])[1]["penultimate"]
    reference = class_means(features, train.labels, 4)
    g = make_generator(derive_seed(5, 3, "test", "targeted@eps=0.2"))
    target = (test.labels + 1) % 4
    # step scaled linearly: 0.03 at 0.1 -> 0.06 at 0.2, in batches of 40 as the prober draws
    adv = torch.cat(
        [
            pgd(model, x_test[i : i + 40], test.labels[i : i + 40], eps=0.2, alpha=0.06, steps=3,
                targeted=True, generator=g)
            for i in range(0, len(x_test), 40)
        ]
    )  # fmt: skip
    assert (adv - x_test).abs().max() > 0.1 + 1e-4  # beyond the run's own radius
    direct = _direct(model, adv, target, "penultimate", reference)
    for metric, value in direct.items():
        assert table[("test", "targeted@eps=0.2", "penultimate", metric)] == pytest.approx(
            value, rel=1e-6, abs=1e-9
        )
    with torch.no_grad():
        hits = (model(adv).argmax(1) == target).float().mean().item()
    assert table[("test", "targeted@eps=0.2", "output", "target_accuracy")] == pytest.approx(hits)
    assert ("test", "pgd", "output", "accuracy") in table.index  # the plain view keeps its name


def test_a_radius_view_without_its_radius_is_refused(setting) -> None:  # type: ignore[no-untyped-def]
    model = setting[0]
    spec = ProbeSpec(
        plan=[("train", "clean"), ("train", "pgd@eps=0.2")],
        layers=["penultimate"],
        norm="linf",
        eps=0.1,
        alpha=0.03,
        steps=1,
    )
    head = model.classifier
    with pytest.raises(ValueError, match="radius"):
        Prober(model, tapped_extractor(model), spec, 4, head.weight, head.bias, torch.device("cpu"))
