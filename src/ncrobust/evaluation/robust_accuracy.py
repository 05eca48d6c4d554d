"""Robust accuracy of any model under strong attacks: AutoAttack and PGD with restarts.

``evaluate(model, data, attacks=["autoattack", "pgd:steps=50:restarts=5"], eps=...)`` returns a
tidy table (``epoch, split, attack, norm, eps, metric, value``): the clean accuracy, each
attack's robust accuracy and, for AutoAttack, the accuracy after each of its stages. A point
counts as robust only if it survives every stage or restart (the worst case), as in the
original AutoAttack evaluation, which attacks only the points still robust.

AutoAttack is the standard suite of Croce & Hein (2020) — APGD-CE, APGD-T, FAB-T and Square in
their standard settings (100 iterations for APGD and FAB, 9 target classes, 5000 Square
queries, one restart) — built from torchattacks' stage classes, an optional dependency
(``pip install 'ncrobust[eval]'``). PGD is ncrobust's own (:func:`ncrobust.attacks.pgd`).
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from ncrobust.attacks import NORMS, pgd
from ncrobust.attacks.ball import Ball
from ncrobust.attacks.margin import margin
from ncrobust.attacks.validation import check_nonnegative
from ncrobust.data import ImageDataset, Split, to_pixels
from ncrobust.errors import UsageError
from ncrobust.runs.tables import (
    ACCURACY,
    AUTOATTACK,
    CHECKS,
    CLEAN,
    OUTPUT_VARIATION,
    PGD_SAME_POINTS,
    POINTS,
    PROBABILITY_OUTPUT,
    SQUARE_GAIN,
    SWEEP_MULTIPLIERS,
    SWEEP_PREFIX,
    TRANSFER_GAIN,
    ZERO_GRADIENT,
    robustness_frame,
)
from ncrobust.runtime import resolve_device
from ncrobust.views import parse_pixels

AUTOATTACK_STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
STAGE_PREFIX = "accuracy_after_"
INSTALL_HINT = (
    "AutoAttack needs the optional package torchattacks: pip install 'ncrobust[eval]' "
    "(or pip install torchattacks)"
)
DEFAULT_STEP = 0.25  # PGD step as a fraction of eps (the paper's 2/255 at 8/255)

# The standard AutoAttack settings (Croce & Hein 2020, version 'standard', l_inf and l_2).
APGD_ITERATIONS = 100
APGD_RHO = 0.75
FAB_ITERATIONS = 100
TARGET_CLASSES = 9
SQUARE_QUERIES = 5000
SQUARE_P_INIT = 0.8


@dataclass(frozen=True)
class PGDSpec:
    """ncrobust's PGD: ``steps`` steps of ``step``·eps from a random start, ``restarts`` times."""

    steps: int = 10
    restarts: int = 1
    step: float | None = None  # fraction of eps; None: the evaluation's default

    @property
    def name(self) -> str:
        text = f"pgd:steps={self.steps}:restarts={self.restarts}"
        return text if self.step is None else f"{text}:step={self.step:g}"


@dataclass(frozen=True)
class AutoAttackSpec:
    """The standard AutoAttack suite."""

    @property
    def name(self) -> str:
        return AUTOATTACK


AttackSpec = PGDSpec | AutoAttackSpec


def parse_attack(spec: str | AttackSpec) -> AttackSpec:
    """``autoattack`` or ``pgd[:steps=S][:restarts=R][:step=F]`` (F a fraction of eps)."""
    if isinstance(spec, PGDSpec | AutoAttackSpec):
        return spec
    text = str(spec).strip().lower()
    if text == AUTOATTACK:
        return AutoAttackSpec()
    head, *options = text.split(":")
    if head != "pgd":
        raise UsageError(
            f"unknown attack {spec!r} (known: autoattack, pgd:steps=S:restarts=R[:step=F])"
        )
    values: dict[str, Any] = {}
    for option in options:
        key, sep, raw = option.partition("=")
        if not sep or key not in ("steps", "restarts", "step") or key in values:
            raise UsageError(
                f"attack {spec!r}: bad option {option!r} "
                "(use steps=S, restarts=R, step=F, each once)"
            )
        if key == "step":
            step = parse_pixels(raw, f"attack {spec!r}: step")
            if not (math.isfinite(step) and step > 0):
                raise UsageError(f"attack {spec!r}: step must be a fraction of eps > 0")
            values[key] = step
            continue
        if not re.fullmatch(r"\d+", raw) or int(raw) < 1:
            raise UsageError(f"attack {spec!r}: {key} must be an integer >= 1, got {raw!r}")
        values[key] = int(raw)
    return PGDSpec(**values)


def parse_attacks(specs: str | Sequence[str | AttackSpec]) -> list[AttackSpec]:
    """Attack specs from a comma-separated string or a list; duplicates refused."""
    items = [s for s in specs.split(",") if s.strip()] if isinstance(specs, str) else list(specs)
    if not items:
        raise UsageError("no attack given (e.g. autoattack,pgd:steps=50:restarts=5)")
    parsed = [parse_attack(s) for s in items]
    names = [a.name for a in parsed]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise UsageError(f"attack {duplicated[0]} given twice")
    return parsed


def check_eps(value: object, norm: str) -> float:
    """A radius in [0,1] pixel units (``8/255`` accepted): > 0, and <= 1 for l_inf."""
    if norm not in NORMS:
        raise UsageError(f"unknown norm {norm!r} (known: {', '.join(NORMS)})")
    try:
        eps = check_nonnegative("eps", parse_pixels(value, "eps"))
    except UsageError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if eps <= 0:
        raise UsageError(f"eps must be > 0, got {value!r}")
    if norm == "linf" and eps > 1:
        raise UsageError(
            f"eps={eps:g} is larger than the whole [0,1] pixel range for linf; "
            f"write it as a fraction, e.g. --eps {eps:g}/255"
        )
    return eps


def require_torchattacks() -> ModuleType:
    """The torchattacks module, or a UsageError that says how to install it."""
    try:
        return importlib.import_module("torchattacks")
    except ImportError as exc:
        raise UsageError(INSTALL_HINT) from exc


def _data(
    data: ImageDataset | Split | tuple[Tensor, Tensor] | Mapping[str, Any],
    splits: Sequence[str],
) -> dict[str, tuple[Tensor, Tensor]]:
    """``{split: (images, labels)}``; images uint8 or float pixels in [0,1]."""
    if isinstance(data, ImageDataset):
        unknown = [s for s in splits if s not in ("train", "test")]
        if unknown or not splits:
            raise UsageError(f"unknown split(s) {unknown} (use train and/or test)")
        named: Mapping[str, Any] = {s: data.split(s) for s in splits}
    elif isinstance(data, Split | tuple):
        named = {"test": data}
    else:
        named = data
    out = {}
    for name, value in named.items():
        x, y = (value.images, value.labels) if isinstance(value, Split) else value
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise UsageError(f"split {name!r}: expected (images, labels) tensors")
        if x.dim() != 4 or y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise UsageError(f"split {name!r}: expected images [N, C, H, W] and labels [N], N > 0")
        if y.is_floating_point() or y.dtype == torch.bool:
            raise UsageError(f"split {name!r}: labels must be integer class indices")
        if x.dtype != torch.uint8 and (not x.is_floating_point() or x.min() < 0 or x.max() > 1):
            raise UsageError(
                f"split {name!r}: images must be uint8 or float pixels in [0, 1] "
                "(the model normalises inside)"
            )
        out[str(name)] = (x, y.long())
    return out


def _chunks(index: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, index.numel(), batch_size):
        yield index[start : start + batch_size]


@dataclass
class _Target:
    """One split on the device: pixels are taken by index, batch by batch."""

    images: Tensor
    labels: Tensor
    device: torch.device

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        cpu = index.to(self.images.device)
        return to_pixels(self.images[cpu], self.device), self.labels[cpu].to(self.device)


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


def _project(x_adv: Tensor, x: Tensor, norm: str, eps: float) -> Tensor:
    """``x_adv`` moved into the threat model (the eps-ball of x within [0,1]), a no-op when in.

    The third-party stages are trusted to stay inside; projecting guarantees that every point
    counted as broken is a valid adversarial example.
    """
    ball = Ball(x, norm, eps)
    if norm == "linf":
        return torch.minimum(torch.maximum(x_adv.detach(), ball.lo), ball.hi)
    return ball.project_l2(x_adv.detach() - x)


def _pgd_robust(
    model: nn.Module,
    target: _Target,
    correct: Tensor,
    spec: PGDSpec,
    norm: str,
    eps: float,
    step: float,
    seed: int,
    batch_size: int,
) -> Tensor:
    """Robust flags under ``spec.restarts`` random-start PGD runs (worst case over restarts)."""
    robust = correct.clone()
    generator = torch.Generator(device=target.device).manual_seed(seed)
    alpha = (spec.step if spec.step is not None else step) * eps
    for _ in range(spec.restarts):
        for index in _chunks(robust.nonzero().flatten(), batch_size):
            x, y = target.batch(index)
            x_adv = pgd(
                model, x, y, norm=norm, eps=eps, alpha=alpha, steps=spec.steps, generator=generator
            )
            robust[index] &= (_predict(model, x_adv) == y).to(robust.device)
    return robust


def _autoattack_stages(
    ta: ModuleType, model: nn.Module, norm: str, eps: float, num_classes: int, seed: int
) -> list[tuple[str, Any]]:
    """The four standard stages, configured explicitly (torchattacks' own AutoAttack class
    builds APGD with 10 iterations; the original suite runs 100)."""
    name = {"linf": "Linf", "l2": "L2"}[norm]
    targets = min(TARGET_CLASSES, num_classes - 1)
    apgd = ta.APGD(
        model, norm=name, eps=eps, steps=APGD_ITERATIONS, n_restarts=1, seed=seed, loss="ce",
        eot_iter=1, rho=APGD_RHO,
    )  # fmt: skip
    apgd_t = ta.APGDT(
        model, norm=name, eps=eps, steps=APGD_ITERATIONS, n_restarts=1, seed=seed, eot_iter=1,
        rho=APGD_RHO, n_classes=num_classes,
    )  # fmt: skip
    fab_t = ta.FAB(
        model, norm=name, eps=eps, steps=FAB_ITERATIONS, n_restarts=1, alpha_max=0.1, eta=1.05,
        beta=0.9, seed=seed, multi_targeted=True, n_classes=num_classes,
    )  # fmt: skip
    square = ta.Square(
        model, norm=name, eps=eps, n_queries=SQUARE_QUERIES, n_restarts=1, p_init=SQUARE_P_INIT,
        loss="margin", resc_schedule=False, seed=seed,
    )  # fmt: skip
    apgd_t.n_target_classes = targets
    fab_t.n_target_classes = targets
    return list(zip(AUTOATTACK_STAGES, (apgd, apgd_t, fab_t, square), strict=True))


def _autoattack_robust(
    ta: ModuleType,
    model: nn.Module,
    target: _Target,
    correct: Tensor,
    norm: str,
    eps: float,
    num_classes: int,
    seed: int,
    batch_size: int,
    on_stage: Callable[[str, float], None] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Robust flags after the four stages run in turn on the points still robust
    (``on_stage(stage, accuracy)`` after each)."""
    robust = correct.clone()
    after: dict[str, float] = {}
    for stage_name, stage in _autoattack_stages(ta, model, norm, eps, num_classes, seed):
        for index in _chunks(robust.nonzero().flatten(), batch_size):
            x, y = target.batch(index)
            x_adv = _project(stage(x, y), x, norm, eps)
            robust[index] &= (_predict(model, x_adv) == y).to(robust.device)
        after[stage_name] = float(robust.float().mean())
        if on_stage is not None:
            on_stage(stage_name, after[stage_name])
    return robust, after


# -- gradient-masking checks (the original AutoAttack suite's checks, ported) ---------------

CHECK_PASSES = 5  # forward passes compared for randomness, as the original suite
PROBABILITY_TOLERANCE = 1e-5  # the original suite's tolerance for "rows sum to 1"


def _output_checks(model: nn.Module, target: _Target, batch_size: int) -> dict[str, float]:
    """Evidence of masking that needs no attack, on every evaluated point: the fraction of
    points whose margin (largest other logit minus the true one) has an all-zero gradient
    w.r.t. the input (the gradient attacks cannot move them), the largest change of
    L2-normalised outputs over repeated forward passes (a randomised model), and whether the
    outputs are probabilities (a softmax applied before the attacks' loss flattens its
    gradient). The original suite inspects the cross-entropy's gradient, which also underflows
    to zero on merely very confident points; the margin's vanishes only where the model's
    outputs are flat in the input."""
    zero = 0
    variation = 0.0
    probability = True
    for index in _chunks(torch.arange(len(target.labels)), batch_size):
        x, y = target.batch(index)
        x.requires_grad_(True)
        with torch.enable_grad():
            out = model(x)
            (grad,) = torch.autograd.grad(margin(out, y).sum(), [x])
        zero += int((grad.flatten(1).abs().sum(1) == 0).sum())
        with torch.no_grad():
            passes = [out.detach(), *(model(x.detach()) for _ in range(CHECK_PASSES - 1))]
        unit = [o / (o.norm(dim=1, keepdim=True) + 1e-10) for o in passes]
        for i, first in enumerate(unit):
            for second in unit[i + 1 :]:
                variation = max(variation, float((first - second).norm(dim=1).max()))
        o = passes[0]
        probability &= bool(
            o.max() < 1 + PROBABILITY_TOLERANCE
            and o.min() > -PROBABILITY_TOLERANCE
            and ((o.sum(1) - 1).abs() < PROBABILITY_TOLERANCE).all()
        )
    return {
        ZERO_GRADIENT: zero / len(target.labels),
        OUTPUT_VARIATION: variation,
        PROBABILITY_OUTPUT: float(probability),
    }


def _box_radius(norm: str, shape: Sequence[int]) -> float:
    """The largest meaningful radius in [0,1] pixels: the whole range (l_inf) or the
    diagonal of the box (l_2)."""
    return 1.0 if norm == "linf" else math.sqrt(math.prod(shape))


def _sweep(
    model: nn.Module,
    target: _Target,
    correct: Tensor,
    norm: str,
    eps: float,
    step: float,
    seed: int,
    batch_size: int,
) -> dict[str, float]:
    """PGD-10 accuracy on the evaluated points at eps and at k·eps (k in SWEEP_MULTIPLIERS,
    capped at the box): without masking it falls towards 0 as the radius grows."""
    spec = PGDSpec(steps=10)
    box = _box_radius(norm, target.images.shape[1:])
    values = {}
    for multiplier in (1, *SWEEP_MULTIPLIERS):
        radius = min(multiplier * eps, box)
        robust = _pgd_robust(model, target, correct, spec, norm, radius, step, seed, batch_size)
        name = PGD_SAME_POINTS if multiplier == 1 else f"{SWEEP_PREFIX}{multiplier}"
        values[name] = float(robust.float().mean())
    return values


def _transfer_gain(
    model: nn.Module,
    surrogate: nn.Module,
    target: _Target,
    robust: Tensor,
    norm: str,
    eps: float,
    step: float,
    seed: int,
    batch_size: int,
) -> float:
    """The fraction of all points that every attack left robust but PGD-10 made on
    ``surrogate`` (a different model, e.g. an earlier checkpoint) breaks on ``model``."""
    broken = 0
    generator = torch.Generator(device=target.device).manual_seed(seed)
    for index in _chunks(robust.nonzero().flatten(), batch_size):
        x, y = target.batch(index)
        x_adv = pgd(
            surrogate, x, y, norm=norm, eps=eps, alpha=step * eps, steps=10, generator=generator
        )
        broken += int((_predict(model, x_adv) != y).sum())
    return broken / len(robust)


def evaluate(
    model: nn.Module,
    data: ImageDataset | Split | tuple[Tensor, Tensor] | Mapping[str, Any],
    *,
    attacks: str | Sequence[str | AttackSpec] = (AUTOATTACK,),
    norm: str = "linf",
    eps: object | Sequence[object] = 8 / 255,
    seed: int = 0,
    step: float = DEFAULT_STEP,
    splits: Sequence[str] = ("test",),
    limit: int | None = None,
    batch_size: int = 500,
    device: str | torch.device | None = None,
    epoch: int = 0,
    on_result: Callable[[pd.DataFrame], None] | None = None,
    checks: bool = True,
    surrogate: nn.Module | None = None,
    on_stage: Callable[[str, float], None] | None = None,
) -> pd.DataFrame:
    """Clean and robust accuracy of ``model`` on ``data`` under each attack and eps.

    ``data``: an ImageDataset (its ``splits``), a mapping ``{split: Split or (x, y)}``, or one
    Split / ``(x, y)`` pair (named ``test``); images uint8 or float pixels in [0,1] (the model
    normalises inside). ``eps`` is one radius or several (``8/255`` accepted); ``step`` is the
    default PGD step as a fraction of eps; ``limit`` keeps the first N points of each split.
    Every input is checked before any attack runs. The model is evaluated in eval mode (its
    mode is restored afterwards), all randomness comes from ``seed`` and the caller's global
    RNG state is left as it was. ``on_result`` receives each attack's rows as soon as they
    are computed (the CLI writes them, so a kill loses nothing finished).

    ``checks`` (default on; cheap next to AutoAttack) adds, per split and eps, the rows of
    attack ``masking-checks`` on the same points: PGD-10 accuracy at eps (what training's PGD
    reports, here comparable with AutoAttack) and at 2·eps and 4·eps, the zero-gradient
    fraction, the output variation between forward passes, whether outputs are probabilities,
    and the accuracy Square removed after the white-box stages (when AutoAttack ran). With a
    ``surrogate`` model (evaluated in eval mode, its mode restored), they also hold the
    accuracy that PGD-10 transferred from it removes from the points every attack left robust.
    ``on_stage`` gets each AutoAttack stage's name and the accuracy after it, as the stage ends
    (progress).
    """
    parsed = parse_attacks(attacks)
    eps_values = [check_eps(e, norm) for e in (eps if isinstance(eps, list | tuple) else [eps])]
    if not eps_values:
        raise UsageError("no eps given")
    if not (math.isfinite(step) and step > 0):
        raise UsageError(f"step must be a fraction of eps > 0, got {step!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"seed must be an integer, got {seed!r}")
    if batch_size < 1:
        raise UsageError("batch_size must be >= 1")
    if limit is not None and limit < 1:
        raise UsageError("limit must be >= 1")
    if surrogate is not None and not isinstance(surrogate, nn.Module):
        raise UsageError(f"surrogate must be a torch.nn.Module, got {type(surrogate).__name__}")
    if surrogate is not None and not checks:
        raise UsageError("the transfer from a surrogate is one of the masking checks: checks=True")
    targets = _data(data, splits)
    ta = require_torchattacks() if any(isinstance(a, AutoAttackSpec) for a in parsed) else None
    parameter = next(model.parameters(), None)
    target_device = (
        resolve_device(str(device))
        if device is not None
        else (parameter.device if parameter is not None else torch.device("cpu"))
    )
    was_training = model.training
    model.to(target_device).eval()
    surrogate_training = surrogate is not None and surrogate.training
    if surrogate is not None:
        surrogate.to(target_device).eval()
    frames: list[pd.DataFrame] = []
    forked = [target_device.index or 0] if target_device.type == "cuda" else []

    def emit(split: str, attack: str, eps_value: float, values: dict[str, float]) -> None:
        """Collect one attack's rows and hand them to ``on_result``."""
        rows = [
            {"epoch": epoch, "split": split, "attack": attack, "norm": norm,
             "eps": eps_value, "metric": metric, "value": value}
            for metric, value in values.items()
        ]  # fmt: skip
        frame = robustness_frame(rows)
        frames.append(frame)
        if on_result is not None:
            on_result(frame)

    try:
        with torch.random.fork_rng(devices=forked):  # torchattacks seeds the global RNG
            for split, (images, labels) in targets.items():
                if limit is not None:
                    images, labels = images[:limit], labels[:limit]
                target = _Target(images, labels, target_device)
                everything = torch.arange(len(labels))
                x0, _ = target.batch(everything[:1])
                with torch.no_grad():
                    num_classes = int(model(x0).shape[1])
                if labels.min() < 0 or labels.max() >= num_classes:
                    raise UsageError(
                        f"split {split!r}: labels must lie in [0, {num_classes}) "
                        "(the model's output width)"
                    )
                correct = torch.cat(
                    [
                        (_predict(model, x) == y).cpu()
                        for x, y in map(target.batch, _chunks(everything, batch_size))
                    ]
                )

                points = float(len(labels))
                emit(split, CLEAN, 0.0, {ACCURACY: float(correct.float().mean()), POINTS: points})
                outputs = _output_checks(model, target, batch_size) if checks else {}
                for eps_value in eps_values:
                    square_gain: dict[str, float] = {}
                    survived = correct.clone()  # robust under every attack
                    for spec in parsed:
                        stages: dict[str, float] = {}
                        if isinstance(spec, PGDSpec):
                            robust = _pgd_robust(
                                model, target, correct, spec, norm, eps_value, step, seed,
                                batch_size,
                            )  # fmt: skip
                        else:
                            assert ta is not None
                            robust, stages = _autoattack_robust(
                                ta, model, target, correct, norm, eps_value, num_classes, seed,
                                batch_size, on_stage,
                            )  # fmt: skip
                        survived &= robust
                        values = {ACCURACY: float(robust.float().mean())}
                        values |= {STAGE_PREFIX + k: v for k, v in stages.items()}
                        emit(split, spec.name, eps_value, values | {POINTS: points})
                        if stages:  # Square's success where the white-box stages failed
                            white_box = stages[AUTOATTACK_STAGES[-2]]
                            square_gain[SQUARE_GAIN] = white_box - stages[AUTOATTACK_STAGES[-1]]
                    if checks:
                        sweep = _sweep(
                            model, target, correct, norm, eps_value, step, seed, batch_size
                        )
                        if surrogate is not None:
                            sweep[TRANSFER_GAIN] = _transfer_gain(
                                model, surrogate, target, survived, norm, eps_value, step, seed,
                                batch_size,
                            )  # fmt: skip
                        found = sweep | outputs | square_gain | {POINTS: points}
                        emit(split, CHECKS, eps_value, found)
    finally:
        model.train(was_training)
        if surrogate is not None:
            surrogate.train(surrogate_training)
    return pd.concat(frames, ignore_index=True)
