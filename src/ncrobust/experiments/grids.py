"""Grids of runs: named grids (the paper's), products of axes, and their cost.

A grid is one or several products datasets × models × modes × norms × eps values × seeds on
top of a base config (a preset per dataset and norm where one exists), so that a named grid
can be exactly the paper's set of runs. :func:`expand` turns it into a plain list of
:class:`~ncrobust.config.TrainConfig` (serialisable with ``to_dict``); :func:`dry_run` lists it
and prices it from measured rates.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncrobust.config import TrainConfig, available_presets, build_config
from ncrobust.errors import UsageError
from ncrobust.views import scaled_step, view_kind

# Views of the small-eps study (Appendix H), measured during training at the run's cadence:
# Figure 16 is ST attacked at 2, 4 and 8 /255 (8/255 is the run's own ``pgd`` view); Figure 15
# is AT trained at 2, 4 and 8 /255, each measured on 8/255-perturbed training data.
_ST_SMALL_EPS = "clean,pgd,gaussian,targeted,pgd@train@eps=2/255,pgd@train@eps=4/255"
_AT_AT_8 = "clean,train_adv,pgd@test,gaussian,pgd@train@eps=8/255"
_MODELS = ["vgg11_bn", "preact_resnet18"]
_SEEDS = ["1", "2", "3"]
_LAYERWISE = {"final_layers": "all"}  # Figures 11-14: every layer at the end of every run
# TRADES as the paper ran it: the released code keeps the model in eval mode (BN frozen)
_TRADES_RELEASED = {**_LAYERWISE, "trades_bn_eval": "true"}

# The small-eps study: every run here also belongs to the paper's grid, with the same config.
_PAPER_EPS: list[dict[str, Any]] = [
    # Figure 16 (and Figures 2, 3, 11, 12): ST on CIFAR-10 l_inf, attacked at 2, 4, 8 /255
    {
        "datasets": ["cifar10"],
        "models": _MODELS,
        "modes": ["st"],
        "norms": ["linf"],
        "seeds": _SEEDS,
        "set": {**_LAYERWISE, "views": _ST_SMALL_EPS},
    },
    # Figure 15 (and Figures 2, 3, 11, 12 at 8/255): AT on CIFAR-10 l_inf at 2, 4, 8 /255, the
    # step scaled linearly, each measured on 8/255-perturbed training data
    {
        "datasets": ["cifar10"],
        "models": _MODELS,
        "modes": ["at"],
        "norms": ["linf"],
        "eps": ["2/255", "4/255", "8/255"],
        "seeds": _SEEDS,
        "set": {**_LAYERWISE, "views": _AT_AT_8},
    },
]

# The released code also trains ImageNette (its 160 px VGG11 and PreActResNet18) with the
# presets' threat models; the paper's text draws no ImageNette figure, so these runs mirror the
# CIFAR set of the figures: l_inf ST, AT, TRADES; l_2 AT, TRADES.
_PAPER_IMAGENETTE: list[dict[str, Any]] = [
    {
        "datasets": ["imagenette"],
        "models": _MODELS,
        "modes": ["st", "at"],
        "norms": ["linf"],
        "seeds": _SEEDS,
        "set": _LAYERWISE,
    },
    {
        "datasets": ["imagenette"],
        "models": _MODELS,
        "modes": ["at"],
        "norms": ["l2"],
        "seeds": _SEEDS,
        "set": _LAYERWISE,
    },
    {
        "datasets": ["imagenette"],
        "models": _MODELS,
        "modes": ["trades"],
        "norms": ["linf", "l2"],
        "seeds": _SEEDS,
        "set": _TRADES_RELEASED,
        "tag": "-bneval",
    },
]

# A named grid is a list of sub-grids, each a product of its axes (``set``: config fields of
# its runs; ``tag``: a suffix of the mode in its run names, for runs that differ from the
# plain mode). Runs listed by two sub-grids with the same config are run once.
GRIDS: dict[str, list[dict[str, Any]]] = {
    # Every run the paper's figures need (2-16), each measured on every layer at its end;
    # 3 seeds, 400 epochs, the presets' threat models.
    "paper": [
        *_PAPER_EPS,
        # Figures 6, 7, 10, 13, 14: ST and AT on CIFAR-100 l_inf
        {
            "datasets": ["cifar100"],
            "models": _MODELS,
            "modes": ["st", "at"],
            "norms": ["linf"],
            "seeds": _SEEDS,
            "set": _LAYERWISE,
        },
        # Figures 5 and 9: AT under l_2 on CIFAR-10 and CIFAR-100 (no figure shows ST under l_2)
        {
            "datasets": ["cifar10", "cifar100"],
            "models": _MODELS,
            "modes": ["at"],
            "norms": ["l2"],
            "seeds": _SEEDS,
            "set": _LAYERWISE,
        },
        # Figures 4, 8 (l_inf) and 5, 9 (l_2): TRADES as released, BN frozen
        {
            "datasets": ["cifar10", "cifar100"],
            "models": _MODELS,
            "modes": ["trades"],
            "norms": ["linf", "l2"],
            "seeds": _SEEDS,
            "set": _TRADES_RELEASED,
            "tag": "-bneval",
        },
        *_PAPER_IMAGENETTE,
    ],
    # the small-eps study alone (Appendix H, Figures 15 and 16)
    "paper-eps": _PAPER_EPS,
    # the ImageNette runs alone
    "paper-imagenette": _PAPER_IMAGENETTE,
    # Does "TRADES does not collapse" survive unfreezing BN? Figure 4's setting both ways on
    # the same seeds: as released (BN frozen, shared with the paper grid) and the original.
    "paper-trades-bn": [
        {
            "datasets": ["cifar10"],
            "models": _MODELS,
            "modes": ["trades"],
            "norms": ["linf"],
            "seeds": _SEEDS,
            "set": _TRADES_RELEASED,
            "tag": "-bneval",
        },
        {
            "datasets": ["cifar10"],
            "models": _MODELS,
            "modes": ["trades"],
            "norms": ["linf"],
            "seeds": _SEEDS,
            "set": {**_LAYERWISE, "trades_bn_eval": "false"},
        },
    ],
    # the embedded default, three seeds: seconds per run on a CPU
    "digits": [
        {
            "datasets": ["digits"],
            "models": ["small_cnn"],
            "modes": ["st", "at", "trades"],
            "norms": ["linf"],
            "seeds": _SEEDS,
        }
    ],
}

AXES = ("datasets", "models", "modes", "norms", "eps", "seeds")


@dataclass
class Grid:
    """One product of axes; an empty ``eps`` keeps each preset's own radius. ``tag`` marks the
    mode in run names (e.g. ``trades-bneval``) for runs whose ``overrides`` change the method."""

    datasets: list[str]
    models: list[str]
    modes: list[str]
    norms: list[str]
    seeds: list[int]
    eps: list[float] = field(default_factory=list)
    root: str = "runs/sweep"
    overrides: dict[str, Any] = field(default_factory=dict)
    tag: str = ""


def expand(grid: Grid | Sequence[Grid]) -> list[TrainConfig]:
    """Every run of ``grid`` (one product or a list of them) as a validated config with its own
    output directory; a run listed twice with the same config is kept once."""
    grids = [grid] if isinstance(grid, Grid) else list(grid)
    configs: dict[str, TrainConfig] = {}
    for sub in grids:
        for config in _expand_one(sub):
            seen = configs.setdefault(config.out, config)
            if seen != config:
                changed = sorted(k for k, v in config.to_dict().items() if seen.to_dict()[k] != v)
                raise UsageError(
                    f"the grid names two different runs {config.out} (they differ in "
                    f"{', '.join(changed)}): give one sub-grid a tag"
                )
    return list(configs.values())


def _expand_one(grid: Grid) -> list[TrainConfig]:
    configs = []
    eps_values: Sequence[float | None] = grid.eps or [None]
    if grid.tag and not re.fullmatch(r"[-A-Za-z0-9.]+", grid.tag):
        raise UsageError(f"grid tag {grid.tag!r}: use letters, digits, '-' and '.' only")
    for dataset, model, mode, norm, eps, seed in itertools.product(
        grid.datasets, grid.models, grid.modes, grid.norms, eps_values, grid.seeds
    ):
        preset: str | None = f"{dataset}-{norm}"
        if preset not in available_presets():
            preset = dataset if dataset in available_presets() else None
        values: dict[str, Any] = {
            "dataset": dataset,
            "model": model,
            "mode": mode,
            "norm": norm,
            "seed": seed,
            **grid.overrides,
        }
        base = build_config(preset, overrides=values | {"out": "unused"})
        if eps is not None:  # small-eps runs scale the step linearly with eps
            values["eps"] = eps
            values["alpha"] = scaled_step(base.alpha, base.eps, eps)
        eps_label = f"{(eps if eps is not None else base.eps) * 255:.6g}"
        values["out"] = str(
            Path(grid.root) / f"{dataset}_{model}_{mode}{grid.tag}_{norm}_eps{eps_label}_seed{seed}"
        )
        configs.append(build_config(preset, overrides=values))
    outs = [c.out for c in configs]
    if len(set(outs)) != len(outs):
        raise UsageError("the grid names two runs alike; vary seeds or eps, not duplicates")
    return configs


# train images, test images and image side of the datasets (to count work before any download)
DATASET_SIZES: dict[str, tuple[int, int, int]] = {
    "cifar10": (50_000, 10_000, 32),
    "cifar100": (50_000, 10_000, 32),
    "imagenette": (9_469, 3_925, 160),
    "digits": (1_437, 360, 8),
}


@dataclass
class Rates:
    """Our images/s per model and mode, as ``ncrobust bench train --write-rates`` writes them."""

    device: str
    image_size: int
    steps: int
    train: dict[str, dict[str, float]]
    measure: dict[str, float]
    # from ``bench pack --write-rates``: the best runs per GPU and their throughput factor
    packing: dict[str, Any] | None = None

    @property
    def runs_per_gpu(self) -> int:
        return int(self.packing["runs_per_gpu"]) if self.packing else 1

    @property
    def packing_factor(self) -> float:
        """Aggregate images/s of the packed runs over one run's (1 without packing)."""
        factor = self.packing.get("throughput_factor") if self.packing else None
        return float(factor) if factor else 1.0


def read_rates(path: str | Path) -> Rates:
    """The rates file written by ``ncrobust bench train --write-rates`` (checked)."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"rates file {file} does not exist (write one with bench train)")
    try:
        data = json.loads(file.read_text())
        rates = Rates(
            device=str(data["device"]),
            image_size=int(data["image_size"]),
            steps=int(data["steps"]),
            train={
                str(m): {str(k): float(v) for k, v in modes.items()}
                for m, modes in data["train"].items()
            },
            measure={str(m): float(v) for m, v in data["measure"].items()},
            packing=data.get("packing"),
        )
        if rates.packing is not None:
            rates.packing = {
                "runs_per_gpu": int(rates.packing["runs_per_gpu"]),
                "throughput_factor": float(rates.packing["throughput_factor"]),
            }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"rates file {file} is not what `ncrobust bench train --write-rates` writes ({exc})"
        ) from exc
    values = [v for modes in rates.train.values() for v in modes.values()]
    if not all(v > 0 for v in [*values, *rates.measure.values()]) or rates.image_size < 1:
        raise UsageError(f"rates file {file}: rates must be > 0")
    if rates.runs_per_gpu < 1 or rates.packing_factor <= 0:
        raise UsageError(f"rates file {file}: packing needs runs_per_gpu >= 1 and a factor > 0")
    return rates


def measured_epochs(config: TrainConfig) -> int:
    """How many times a run is measured (epoch 0, every ``measure_every``-th and the last)."""
    from ncrobust.config import is_measured

    return sum(is_measured(config, epoch) for epoch in range(config.epochs + 1))


def estimate_seconds(config: TrainConfig, rates: Rates) -> float | None:
    """Seconds of one run at ``rates`` (None when its model, mode or dataset has no rate)."""
    parts = estimate_parts(config, rates)
    return None if parts is None else sum(parts)


ATTACK_VIEWS = ("pgd", "targeted")  # views made by a fresh PGD attack at measurement


def estimate_parts(config: TrainConfig, rates: Rates) -> tuple[float, float] | None:
    """(training, measurement) seconds of one run at ``rates``, or None without a rate.

    Training: epochs × train images / images-per-second of the model and mode, scaled by the
    image area and, for AT and TRADES, by (steps + 1) against the benchmark's attack steps.
    Measurement: every view of every measured epoch (plus the always-recorded test clean and
    PGD accuracy) as one forward pass per image at the measurement rate, and each PGD-made
    view (``pgd``, ``targeted``, also at their own radii; ST's ``train_adv``, made during
    training) adds the attack's cost per image, the AT rate's time less the ST rate's,
    scaled by the steps (without both rates, an AT/TRADES step's whole time). An estimate:
    precision and layers shift the real time.
    """
    sizes = DATASET_SIZES.get(config.dataset)
    model_rates = rates.train.get(config.model, {})
    train_rate = model_rates.get(config.mode)
    measure_rate = rates.measure.get(config.model)
    if sizes is None or train_rate is None or measure_rate is None:
        return None
    n_train, n_test, side = sizes
    area = (side / rates.image_size) ** 2
    steps = (config.steps + 1) / (rates.steps + 1)
    attack_s = 0.0  # seconds per image of one PGD attack
    if "st" in model_rates and "at" in model_rates:
        attack_s = max(0.0, 1 / model_rates["at"] - 1 / model_rates["st"]) * steps
    elif config.mode != "st":  # no ST/AT pair: an AT/TRADES step is mostly its attack
        attack_s = steps / train_rate
    else:
        return None  # no way to price the attacks
    train_s = config.epochs * n_train / train_rate * area * (1.0 if config.mode == "st" else steps)
    plan = config.probe_plan()
    pairs = [*plan, *(p for p in (("test", "clean"), ("test", "pgd")) if p not in plan)]
    per_measurement = 0.0
    for split, view in pairs:
        n = n_train if split == "train" else n_test
        attacked = view_kind(view) in ATTACK_VIEWS
        per_measurement += n * (1 / measure_rate + (attack_s if attacked else 0.0))
    measured = measured_epochs(config)
    measure_s = measured * per_measurement * area
    if config.mode == "st" and ("train", "train_adv") in plan:  # ST attacks to measure it
        measure_s += (measured - 1) * n_train * attack_s * area
    return train_s, measure_s


def dry_run(configs: Sequence[TrainConfig], rates: Rates | None = None) -> str:
    """The run list with epochs, measurements, training images and (with ``rates``) the
    estimated compute, then the totals; nothing is trained or written."""
    lines = []
    total_epochs = total_images = 0
    total_s = train_total = 0.0
    unknown = []
    for config in configs:
        n_train = DATASET_SIZES.get(config.dataset, (0, 0, 0))[0]
        images = config.epochs * n_train
        total_epochs += config.epochs
        total_images += images
        line = f"{config.out}  {config.epochs} epochs, {measured_epochs(config)} measurements"
        if n_train:
            line += f", {images:,} training images"
        if rates is not None:
            parts = estimate_parts(config, rates)
            if parts is None:
                unknown.append(config.out)
                line += ", no rate"
            else:
                total_s += sum(parts)
                train_total += parts[0]
                line += (
                    f", ~{_duration(sum(parts))} (training {_duration(parts[0])}, "
                    f"measurement {_duration(parts[1])})"
                )
        lines.append(line)
    lines.append(f"{len(configs)} runs, {total_epochs:,} epochs, {total_images:,} training images")
    if rates is None:
        lines.append(
            "no rates given: counts only (write rates with `ncrobust bench train --write-rates "
            "FILE` on the target device, then pass --rates FILE)"
        )
    else:
        lines.append(
            f"estimated compute: ~{_duration(total_s)} on {rates.device}, runs one after another "
            f"(training {_duration(train_total)}, measurement {_duration(total_s - train_total)})"
            + (f" ({len(unknown)} runs without a rate not counted)" if unknown else "")
        )
        k, factor = rates.runs_per_gpu, rates.packing_factor
        gpu_hours = total_s / 3600 / factor
        packed = (
            f"{k} runs per GPU (x{factor:.2f} throughput, bench pack)"
            if k > 1
            else ("one run per GPU (no packing measured: bench pack --write-rates)")
        )
        lines.append(
            f"GPU-hours: {gpu_hours:.1f} with {packed}; wall-clock ~{gpu_hours:.1f} h on 1 GPU, "
            f"~{gpu_hours / 8:.1f} h on 8 GPUs"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
