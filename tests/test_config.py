"""Configuration: precedence, pixel fractions, presets, and refusal of bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from ncrobust.config import TrainConfig, available_presets, build_config, read_config, write_config
from ncrobust.errors import UsageError
from ncrobust.views import ViewSpec, parse_pixels, parse_view, scaled_step


def test_pixel_fractions_and_numbers() -> None:
    assert parse_pixels("8/255") == pytest.approx(8 / 255)
    assert parse_pixels("1536 / 255") == pytest.approx(1536 / 255)
    assert parse_pixels(0.25) == 0.25
    assert parse_pixels("0.1") == 0.1
    with pytest.raises(UsageError, match="k/255"):
        parse_pixels("eight")
    with pytest.raises(UsageError, match="division by zero"):
        parse_pixels("8/0")


def test_precedence_defaults_preset_file_flags(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("preset: cifar10-l2\nsteps: 7\nseed: 3\n")
    config = build_config(config_file=file, overrides={"seed": "5", "mode": "at"})
    assert config.dataset == "cifar10" and config.norm == "l2"  # from the preset
    assert config.eps == pytest.approx(128 / 255) and config.alpha == pytest.approx(15 / 255)
    assert config.steps == 7  # the file overrides the preset
    assert config.seed == 5 and config.mode == "at"  # flags override the file
    assert config.views == ["clean", "train_adv", "pgd@test", "gaussian"]  # the mode's default
    assert config.out == "runs/cifar10_vgg11_bn_at_l2_eps128_seed5"


def test_paper_presets_are_the_papers_settings() -> None:
    assert {"cifar10-linf", "cifar100-l2", "imagenette-linf", "digits"} <= set(available_presets())
    c = build_config("cifar100-linf")
    assert (c.dataset, c.norm, c.steps, c.epochs) == ("cifar100", "linf", 10, 400)
    assert (c.eps, c.alpha) == (pytest.approx(8 / 255), pytest.approx(2 / 255))
    assert (c.lr, c.batch_size, c.momentum, c.weight_decay) == (0.1, 128, 0.9, 5e-4)
    assert c.lr_milestones == [0.25, 0.375]
    i = build_config("imagenette-l2")
    assert (i.steps, i.eps, i.alpha) == (5, pytest.approx(1536 / 255), pytest.approx(360 / 255))


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    config = build_config("digits", overrides={"views": "all", "layers": "all", "out": "x"})
    write_config(config, tmp_path / "config.yaml")
    assert read_config(tmp_path / "config.yaml") == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataset": "mnist"}, "unknown dataset 'mnist'"),
        ({"model": "resnet50"}, "unknown model 'resnet50'"),
        ({"mode": "fgsm"}, "unknown mode 'fgsm'"),
        ({"norm": "l1"}, "unknown norm 'l1'"),
        ({"views": "clean,adv"}, "unknown view 'adv'"),
        ({"splits": "val"}, "unknown split 'val'"),
        ({"eps": "-0.1"}, "eps must be a finite number >= 0"),
        ({"eps": "8"}, "--eps 8/255"),
        ({"alpha": "2"}, "--alpha 2/255"),
        ({"batch_size": "0"}, "batch_size must be >= 1"),
        ({"epochs": "0"}, "epochs must be >= 1"),
        ({"steps": "0"}, "steps must be >= 1"),
        ({"lr_milestones": "0.5,0.25"}, "lr_milestones must be increasing"),
        ({"batch_size": "1.5"}, "expected an integer"),
        ({"trades_bn_eval": "maybe"}, "expected true/false"),
        ({"precision": "fp16"}, "unknown precision"),
        ({"nonsense": 1}, "unknown configuration key 'nonsense'"),
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config("digits", overrides=overrides)


def test_probe_plan_orders_reference_first_and_limits_views() -> None:
    config = build_config(overrides={"views": "gaussian,clean,train_adv,pgd@test"})
    assert config.probe_plan() == [
        ("train", "clean"),
        ("train", "gaussian"),
        ("train", "train_adv"),
        ("test", "gaussian"),
        ("test", "clean"),
        ("test", "pgd"),
    ]
    assert TrainConfig().probe_plan() == []  # unresolved: no views yet


def test_view_specs_with_their_own_radius() -> None:
    assert parse_view("pgd") == ViewSpec("pgd")
    assert parse_view("pgd@test") == ViewSpec("pgd", "test")
    two = parse_view("pgd@eps=2/255", "linf")
    assert (two.view, two.split, two.eps) == ("pgd", None, pytest.approx(2 / 255))
    assert two.label == "pgd@eps=0.00784314"
    assert parse_view("targeted@train@eps=0.25").label == "targeted@eps=0.25"
    assert parse_view("pgd@eps=3", "l2").eps == 3.0  # an l_2 radius may exceed 1
    config = build_config(
        "digits", overrides={"views": "clean,targeted@eps=0.25,pgd@test@eps=2/255,pgd@test"}
    )
    assert config.probe_plan() == [
        ("train", "clean"),
        ("train", "targeted@eps=0.25"),
        ("test", "clean"),
        ("test", "targeted@eps=0.25"),
        ("test", "pgd@eps=0.00784314"),
        ("test", "pgd"),
    ]
    assert config.view_radii() == {
        "targeted@eps=0.25": 0.25,
        "pgd@eps=0.00784314": pytest.approx(2 / 255),
    }
    assert scaled_step(2 / 255, 8 / 255, 2 / 255) == pytest.approx(0.5 / 255)


@pytest.mark.parametrize(
    ("views", "message"),
    [
        ("pgd@eps=8", "pgd@eps=8/255"),  # linf: larger than the pixel range
        ("pgd@eps=0", "eps must be a finite number > 0"),
        ("pgd@eps=-1/255", "eps must be a finite number > 0"),
        ("pgd@eps=nan", "eps must be a finite number > 0"),
        ("pgd@eps=two", "k/255"),
        ("gaussian@eps=0.1", "only pgd, targeted and ncc_adaptive take a radius"),
        ("clean@eps=0.1", "only pgd, targeted and ncc_adaptive take a radius"),
        ("pgd@val", "cannot read 'val'"),
        ("pgd@eps=0.1@eps=0.2", "cannot read 'eps=0.2'"),
        ("pgd@test@train", "cannot read 'train'"),
        ("pgd@radius=0.1", "cannot read 'radius=0.1'"),
        ("fgsm@eps=0.1", "unknown view 'fgsm'"),
        ("pgd@eps=2/255,pgd@eps=0.007843137", "share the label"),
    ],
)
def test_bad_view_specs_are_refused(views: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config("digits", overrides={"views": views})


def test_view_radius_needs_a_positive_run_eps_and_round_trips(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="the run's eps must be > 0"):
        build_config("digits", overrides={"eps": 0, "views": "pgd@eps=0.1"})
    config = build_config("digits", overrides={"views": "clean,pgd@eps=2/255", "out": "x"})
    assert config.views == ["clean", "pgd@eps=2/255"]  # recorded as given
    write_config(config, tmp_path / "config.yaml")
    assert read_config(tmp_path / "config.yaml").view_radii() == config.view_radii()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"norm": "l2", "eps": "128"}, "--eps 128/255"),  # digits: l2 diameter sqrt(64) = 8
        ({"dataset": "cifar10", "norm": "l2", "eps": "128"}, r"sqrt\(3072\)"),
        ({"norm": "l2", "alpha": "9"}, "--alpha 9/255"),
        ({"device": "meta"}, "unknown device 'meta'"),
        ({"device": "xpu"}, "unknown device 'xpu'"),
        ({"seed": "1e30"}, "seed: 1e30 is out of range"),
        ({"seed": "-1"}, "seed must be in"),
        ({"epochs": True}, "epochs: expected an integer, got True"),
        ({"lr": True}, "lr: expected a number, got True"),
        ({"out": None}, "out: expected a string, got null"),
        ({"model": None}, "model: expected a string, got null"),
        ({"out": "runs/\udcff\ud800"}, "cannot be encoded"),
    ],
)
def test_more_bad_settings_name_their_setting(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_config("digits", overrides=overrides)


def test_l2_radius_within_the_box_and_big_integers_exact() -> None:
    config = build_config(overrides={"norm": "l2", "eps": "128/255", "seed": "2305843009213693951"})
    assert config.eps == pytest.approx(128 / 255)
    assert config.seed == 2**61 - 1  # parsed exactly, not through a float
    assert build_config(overrides={"dataset": "imagenette", "norm": "l2", "eps": "6"}).eps == 6


def test_python_api_gets_the_same_validation() -> None:
    from ncrobust.config import validate

    with pytest.raises(UsageError, match="epochs: expected int, got True"):
        validate(build_config().__class__(epochs=True, out="x", views=["clean"]))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="out: expected str, got null"):
        validate(TrainConfig(out=None, views=["clean"]))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--eps 128/255"):
        validate(TrainConfig(norm="l2", eps=128.0, out="x", views=["clean"]))


def _stored(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    write_config(build_config("digits", overrides={"out": "x"}), path)
    return path


def test_stored_config_cut_mid_value_is_refused(tmp_path: Path) -> None:
    path = _stored(tmp_path)
    text = path.read_text()
    cut = text[: text.index("gaussian_std: ") + len("gaussian_std: 0.0")]
    path.write_text(cut)
    with pytest.raises(UsageError, match="does not match its checksum"):
        read_config(path)
    path.write_text(cut.partition("\n")[2])  # without the checksum line: every field required
    with pytest.raises(UsageError, match="lacks feature_cache_mb, out"):
        read_config(path)


def test_stored_config_edited_without_header_is_accepted_when_complete(tmp_path: Path) -> None:
    path = _stored(tmp_path)
    body = path.read_text().partition("\n")[2].replace("seed: 1", "seed: 4")
    path.write_text(body)
    assert read_config(path).seed == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), (b"  \n", "is empty"), (b"dataset: \xff\xfe\n", "is not UTF-8")],
)
def test_empty_or_binary_config_names_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=f"config file {path} {message}"):
        read_config(path)
