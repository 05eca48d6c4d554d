"""Typed run configuration: defaults < preset < YAML file < flags, validated before any compute.

One dataclass, :class:`TrainConfig`, is the single source of truth for a run. It is built
from plain values (presets and YAML files are flat mappings of its field names), checked
by :func:`validate`, and written back in full as the run directory's ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ncrobust.atomic import atomic_write_text
from ncrobust.attacks import NORMS
from ncrobust.data import DATASETS
from ncrobust.errors import UsageError, closest
from ncrobust.models import available_models
from ncrobust.runtime import COMPILE_SETTINGS, PRECISIONS
from ncrobust.tracking import check_tracking
from ncrobust.views import (
    ADAPTIVE_VIEW,
    SPLITS,
    VIEWS,
    parse_pixels,
    parse_view,
    probe_plan,
    view_radii,
)

MODES = ("st", "at", "trades")

# The paper's views per mode: ST measures fresh attacks; AT/TRADES measure the perturbed
# inputs of the epoch's own training, and fresh PGD on the (smaller) test split only.
DEFAULT_VIEWS: dict[str, tuple[str, ...]] = {
    "st": ("clean", "pgd", "gaussian", "targeted"),
    "at": ("clean", "train_adv", "pgd@test", "gaussian"),
    "trades": ("clean", "train_adv", "pgd@test", "gaussian"),
}


@dataclass
class TrainConfig:
    """Everything that determines a training run and its measurements."""

    # data and model
    dataset: str = "digits"
    data_dir: str | None = None
    augment: bool = False
    model: str = "small_cnn"
    # objective and threat model (eps/alpha in [0,1] pixel units)
    mode: str = "st"
    norm: str = "linf"
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    trades_beta: float = 6.0
    trades_bn_eval: bool = False
    # optimisation (the paper: SGD 0.1, momentum 0.9, wd 5e-4, drops at 25 % and 37.5 %)
    epochs: int = 400
    lr: float = 0.1
    lr_milestones: list[float] = field(default_factory=lambda: [0.25, 0.375])
    lr_gamma: float = 0.1
    batch_size: int = 128
    weight_decay: float = 5e-4
    momentum: float = 0.9
    seed: int = 1
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = True
    compile: str = "auto"  # torch.compile of the training step: auto (on for CUDA), on, off
    deterministic: bool = False  # deterministic algorithms, no cuDNN autotuning (bitwise on CUDA)
    # several processes (torchrun): BN statistics over the global batch; world_size records how
    # many processes trained the run (set by the launch, updated when a resume uses another)
    sync_bn: bool = True
    world_size: int = 1
    # measurement ("probes")
    measure_every: int = 5
    measure_batch_size: int = 512
    views: list[str] = field(default_factory=list)  # empty: the mode's defaults
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    layers: list[str] = field(default_factory=lambda: ["penultimate"])
    final_layers: list[str] = field(default_factory=list)  # layers at the last epoch (empty: same)
    gaussian_std: float = 8 / 255
    feature_cache_mb: int = 2048
    # output
    out: str = ""  # empty: runs/<dataset>_<model>_<mode>_<norm>_eps<eps·255>_seed<seed>
    checkpoint_every: int = 50
    tensorboard: bool = False
    tracking: str = ""  # "" (off) or mlflow: config, metric rows and files to a tracking store
    tracking_dir: str = ""  # empty: $MLFLOW_TRACKING_URI, else ./mlruns (a local file store)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping of every field (lists copied), as written to ``config.yaml``."""
        return dataclasses.asdict(self)

    def probe_plan(self) -> list[tuple[str, str]]:
        """(split, view) pairs to measure, in measurement order; clean train comes first."""
        return probe_plan(self.views, self.splits)

    def view_radii(self) -> dict[str, float]:
        """Label -> own radius of the views that carry one (e.g. ``targeted@eps=0.25``)."""
        return view_radii(self.views)


CONFIG_FIELDS = {f.name: f for f in fields(TrainConfig)}
# Fields that record how a run was executed rather than what it computes: set by the launch,
# not offered as flags, and two configs that differ only in them describe the same run.
EXECUTION_FIELDS = frozenset({"world_size"})
# Fields that say where or how a run executes, not what it computes: a stored run that differs
# from a grid point only in them is that grid point's run.
PLACEMENT_FIELDS = EXECUTION_FIELDS | {
    "out",
    "compile",
    "deterministic",
    "device",
    "data_dir",
    "tensorboard",
    "tracking",
    "tracking_dir",
    "feature_cache_mb",
}
# fields added after runs without a checksum header were written: such a run lacks them and
# gets their defaults (how it executes, not what it computes)
LATER_FIELDS = frozenset({"compile", "deterministic", "tracking", "tracking_dir"})
_LIST_FIELDS = {"lr_milestones", "views", "splits", "layers", "final_layers"}
PIXEL_FIELDS = ("eps", "alpha", "gaussian_std")  # pixel-unit amounts: a number or k/255


INT_RANGE = (-(2**63), 2**63 - 1)  # what torch and the file formats can hold
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _coerce(name: str, value: Any) -> Any:
    """Convert a YAML/flag value to the field's type, with a clear message on failure."""
    if name not in CONFIG_FIELDS:
        known = ", ".join(sorted(CONFIG_FIELDS))
        raise UsageError(f"unknown configuration key {name!r} (known: {known})")
    default = getattr(TrainConfig(), name)
    if name in PIXEL_FIELDS:
        return parse_pixels(value, name)
    if name in _LIST_FIELDS:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise UsageError(f"{name}: expected a list or a comma-separated string")
        items = [str(v).strip() for v in items]
        if "" in items and items != [""]:
            raise UsageError(f"{name}: empty item in {value!r}")
        items = [v for v in items if v]
        if not items and isinstance(value, str) and name in ("views", "splits", "layers"):
            raise UsageError(f"{name} must not be empty (omit it for the default)")
        if name == "lr_milestones":
            return [parse_pixels(v, name) for v in items]
        return items
    if name == "out" and isinstance(value, str) and not value.strip():
        raise UsageError(f"out must name a directory, got {value!r}")
    if name == "data_dir":
        return None if value in (None, "") else str(value)
    if name == "compile":  # auto, on, off; --compile / --no-compile and true/false mean on/off
        text = str(value).strip().lower()
        return {"true": "on", "yes": "on", "1": "on", "false": "off", "no": "off", "0": "off"}.get(
            text, text
        )
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{name}: expected true/false, got {value!r}")
    if isinstance(value, bool) or value is None or isinstance(value, list | tuple | dict):
        kind = "an integer" if isinstance(default, int) else "a number"
        kind = "a string" if isinstance(default, str) else kind
        raise UsageError(f"{name}: expected {kind}, got {_show_raw(value)}")
    if isinstance(default, int):
        return _integer(name, value)
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{name}: expected a number, got {value!r}") from exc
    return str(value)


def _show_raw(value: Any) -> str:
    return "null" if value is None else repr(value)


def _integer(name: str, value: Any) -> int:
    """An exact integer from an int, an integral float or a string, within :data:`INT_RANGE`."""
    text = str(value).strip()
    if isinstance(value, int) or _INTEGER.fullmatch(text):
        number = int(value) if isinstance(value, int) else int(text)
    else:
        try:
            real = float(text)
        except ValueError as exc:
            raise UsageError(f"{name}: expected an integer, got {value!r}") from exc
        if not real.is_integer():
            raise UsageError(f"{name}: expected an integer, got {value!r}")
        number = int(real)
    if not INT_RANGE[0] <= number <= INT_RANGE[1]:
        raise UsageError(f"{name}: {text} is out of range (at most {INT_RANGE[1]} in magnitude)")
    return number


def apply_overrides(config: TrainConfig, values: Mapping[str, Any]) -> TrainConfig:
    """A copy of ``config`` with ``values`` (field name -> raw value) coerced and applied."""
    updates = {
        key.replace("-", "_"): _coerce(key.replace("-", "_"), v) for key, v in values.items()
    }
    return dataclasses.replace(config, **updates)


def available_presets() -> list[str]:
    """Names of the bundled presets (``ncrobust/presets/*.yaml``)."""
    folder = resources.files("ncrobust") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The raw mapping of a bundled preset."""
    if name not in available_presets():
        known = available_presets()
        raise UsageError(
            f"unknown preset {name!r}{closest(name, known)} (available: {', '.join(known)})"
        )
    text = (resources.files("ncrobust") / "presets" / f"{name}.yaml").read_text()
    return _mapping(yaml.safe_load(text), f"preset {name}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML config file (a flat mapping of field names)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(_config_text(p))
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {p} is not valid YAML: {yaml_problem(exc)}") from None
    return _mapping(data, f"config file {p}")


def yaml_problem(exc: Exception) -> str:
    """A YAML parser error in one line: what is wrong and where (its text spans lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def _mapping(data: Any, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a mapping of configuration keys")
    return {str(k): v for k, v in data.items()}


def build_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Defaults < preset < YAML file < overrides, then :func:`resolve` and :func:`validate`."""
    config = TrainConfig()
    if config_file is not None:
        file_values = load_yaml(config_file)
        preset = preset or file_values.pop("preset", None)
        file_values.pop("preset", None)
    else:
        file_values = {}
    if preset:
        config = apply_overrides(config, load_preset(preset))
    config = apply_overrides(config, file_values)
    config = apply_overrides(config, overrides or {})
    return validate(resolve(config))


def resolve(config: TrainConfig) -> TrainConfig:
    """Fill the fields whose defaults depend on others (views per mode)."""
    views = list(config.views) or list(DEFAULT_VIEWS.get(config.mode, DEFAULT_VIEWS["st"]))
    if views == ["all"]:  # every view but the adaptive one (an attack per layer): opt in
        views = [v for v in VIEWS if v != ADAPTIVE_VIEW]
    out = config.out or default_out(config)
    return dataclasses.replace(config, views=views, out=out)


def default_out(config: TrainConfig) -> str:
    """The default run directory name, unique per setting and seed."""
    c = config
    return f"runs/{c.dataset}_{c.model}_{c.mode}_{c.norm}_eps{c.eps * 255:.6g}_seed{c.seed}"


def validate(config: TrainConfig) -> TrainConfig:
    """Refuse every inconsistent or absurd setting with one clear message; return ``config``."""

    def need(condition: bool, message: str) -> None:
        if not condition:
            raise UsageError(message)

    _check_types(config)
    need(
        config.dataset in DATASETS,
        f"unknown dataset {config.dataset!r} (known: {', '.join(DATASETS)})",
    )
    models = available_models()
    need(config.model in models, f"unknown model {config.model!r} (known: {', '.join(models)})")
    need(config.mode in MODES, f"unknown mode {config.mode!r} (known: {', '.join(MODES)})")
    need(config.norm in NORMS, f"unknown norm {config.norm!r} (known: {', '.join(NORMS)})")
    check_device(config.device)
    check_tracking(config.tracking)
    need(config.precision in PRECISIONS, f"unknown precision {config.precision!r} (fp32 or bf16)")
    need(
        config.compile in COMPILE_SETTINGS,
        f"unknown compile setting {config.compile!r} (known: {', '.join(COMPILE_SETTINGS)})",
    )
    for name in ("eps", "alpha", "gaussian_std", "lr", "trades_beta", "weight_decay", "momentum"):
        value = getattr(config, name)
        need(
            math.isfinite(value) and value >= 0, f"{name} must be a finite number >= 0, got {value}"
        )
    need(config.alpha > 0, f"alpha must be > 0, got {config.alpha}")
    need(config.lr > 0, f"lr must be > 0, got {config.lr}")
    check_radius(config.norm, config.eps, config.dataset, "eps")
    check_radius(config.norm, config.alpha, config.dataset, "alpha")
    need(config.gaussian_std <= 1, f"gaussian_std={config.gaussian_std:g} exceeds the pixel range")
    need(config.steps >= 1, f"steps must be >= 1, got {config.steps}")
    need(config.epochs >= 1, f"epochs must be >= 1, got {config.epochs}")
    need(config.batch_size >= 1, f"batch_size must be >= 1, got {config.batch_size}")
    need(config.world_size >= 1, f"world_size must be >= 1, got {config.world_size}")
    need(config.measure_batch_size >= 1, "measure_batch_size must be >= 1")
    need(config.measure_every >= 1, f"measure_every must be >= 1, got {config.measure_every}")
    need(config.checkpoint_every >= 0, "checkpoint_every must be >= 0 (0: only the last epoch)")
    need(config.feature_cache_mb >= 0, "feature_cache_mb must be >= 0")
    need(config.momentum < 1, f"momentum must be < 1, got {config.momentum}")
    need(0 < config.lr_gamma <= 1, f"lr_gamma must be in (0, 1], got {config.lr_gamma}")
    need(
        all(0 < m < 1 for m in config.lr_milestones)
        and list(config.lr_milestones) == sorted(config.lr_milestones),
        "lr_milestones must be increasing fractions of the run in (0, 1), "
        f"got {config.lr_milestones}",
    )
    need(bool(config.splits), "splits must not be empty")
    for split in config.splits:
        need(split in SPLITS, f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    need(bool(config.views), "views must not be empty")
    labels: dict[str, float | None] = {}
    for spec in config.views:
        parsed = parse_view(spec, config.norm)
        need(
            labels.setdefault(parsed.label, parsed.eps) == parsed.eps,
            f"views {spec!r} and another one share the label {parsed.label!r}: "
            "give their radii more distinct values",
        )
        need(
            parsed.eps is None or config.eps > 0,
            f"view {spec!r} scales the step alpha · E / eps: the run's eps must be > 0",
        )
    need(bool(config.layers), "layers must not be empty (use 'penultimate' or 'all')")
    need(bool(config.out), "out must name a directory")
    check_path(config.out, "out")
    if config.data_dir is not None:
        check_path(config.data_dir, "data_dir")
    need(0 <= config.seed < 2**63, f"seed must be in [0, 2**63), got {config.seed}")
    return config


# Input values (C*H*W) per dataset: the l_2 diameter of the [0,1] image box is their root.
INPUT_VALUES = {"cifar10": 3072, "cifar100": 3072, "imagenette": 3 * 160 * 160, "digits": 64}
INPUT_VALUES["synthetic"] = 3 * 32 * 32
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


GREY_RADIUS = 0.5  # an l_inf ball this large around any image holds the all-grey image


def check_radius(norm: str, value: float, dataset: str, name: str = "eps") -> None:
    """Refuse a radius beyond the [0,1] image box (1 for l_inf, sqrt(C*H*W) for l_2) and an
    l_inf radius of 0.5 or more (every image can be made the same grey image).

    Such a ball makes the task meaningless, so the value is almost surely k meant as k/255.
    """
    if norm == "linf":
        bound, where = 1.0, "the whole [0,1] pixel range for linf"
    else:
        values = INPUT_VALUES.get(dataset, 3 * 32 * 32)
        bound = math.sqrt(values)
        where = f"the l2 diameter of {dataset}'s [0,1] image box (sqrt({values}) = {bound:.4g})"
    flag = "--" + name.replace("_", "-")
    if not value <= bound:
        raise UsageError(
            f"{name}={value:g} is larger than {where}; "
            f"write it as a fraction, e.g. {flag} {value:g}/255"
        )
    if norm == "linf" and value >= GREY_RADIUS:
        raise UsageError(
            f"{name}={value:g}: an l_inf radius >= {GREY_RADIUS:g} lets the attack turn every "
            f"image into the same grey image; if k/255 was meant, write {flag} {value:g}/255"
        )


def check_device(name: object) -> None:
    """Refuse device names ncrobust cannot run on (``meta``, ``xpu``, typos) before any work."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise UsageError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)")


def check_path(value: object, name: str) -> None:
    """Refuse a path the file system cannot encode (e.g. lone surrogates) or that is absurd."""
    if not isinstance(value, str):
        raise UsageError(f"{name}: expected a path, got {_show_raw(value)}")
    if "\0" in value:
        raise UsageError(f"{name}: a path cannot contain a NUL character")
    try:
        os.fsencode(value)
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(
            f"{name}: {value.encode('utf-8', 'backslashreplace').decode()!r} cannot be encoded "
            "as a file name"
        ) from exc


def _check_types(config: TrainConfig) -> None:
    """Every field holds its declared type (the Python API skips :func:`_coerce`)."""
    defaults = TrainConfig()
    for name in CONFIG_FIELDS:
        value, default = getattr(config, name), getattr(defaults, name)
        if name == "data_dir":
            ok = value is None or isinstance(value, str)
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif isinstance(default, list):
            ok = isinstance(value, list) and all(
                isinstance(v, str) or (name == "lr_milestones" and isinstance(v, int | float))
                for v in value
            )
        else:
            ok = isinstance(value, str)
        if not ok:
            kind = type(default).__name__ if name != "data_dir" else "str or None"
            raise UsageError(f"{name}: expected {kind}, got {_show_raw(value)}")


def validate_layers(config: TrainConfig, available: list[str]) -> list[str]:
    """The concrete tap names for ``config.layers`` on a model offering ``available``."""
    if config.layers == ["all"]:
        return list(available)
    unknown = [name for name in config.layers if name not in available]
    if unknown:
        raise UsageError(
            f"unknown layer(s) {', '.join(unknown)} for model {config.model!r} "
            f"(available: {', '.join(available)}, or 'all')"
        )
    return list(config.layers)


CONFIG_HEADER = "# ncrobust config sha256="


def write_config(config: TrainConfig, path: Path) -> None:
    """Write the fully resolved config as YAML (atomically), headed by the body's checksum."""
    body = yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    atomic_write_text(path, f"{CONFIG_HEADER}{digest}\n{body}")


def _config_text(path: Path) -> str:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from exc
    if not data.strip():
        raise UsageError(f"config file {path} is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None


def is_ncrobust_config(path: Path) -> bool:
    """Whether ``path`` looks written by ncrobust: its checksum header, or a mapping of fields."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if text.startswith(CONFIG_HEADER):
        return True
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and {"dataset", "model"} <= set(data) <= set(CONFIG_FIELDS)


def read_config(path: Path) -> TrainConfig:
    """Load a run's ``config.yaml`` back, validated as a whole.

    A file with ncrobust's checksum header must match it (a file cut mid-value or edited
    fails); a file without one (older runs, or a hand edit with the header line removed)
    must name every field, so a cut file is refused rather than completed with defaults.
    """
    text = _config_text(path)
    if text.startswith(CONFIG_HEADER):
        header, _, body = text.partition("\n")
        stored = header[len(CONFIG_HEADER) :].strip()
        if hashlib.sha256(body.encode("utf-8")).hexdigest() != stored:
            raise UsageError(
                f"config file {path} does not match its checksum: it is truncated or was edited "
                "(to accept a deliberate edit, delete its first line)"
            )
    try:
        data = _mapping(yaml.safe_load(text), f"config file {path}")
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path} is not valid YAML: {yaml_problem(exc)}") from None
    try:
        config = apply_overrides(TrainConfig(), data)
    except UsageError as exc:
        raise UsageError(f"config file {path}: {exc}") from None
    if not text.startswith(CONFIG_HEADER):
        missing = [name for name in CONFIG_FIELDS if name not in data and name not in LATER_FIELDS]
        if missing:
            raise UsageError(
                f"config file {path} lacks {', '.join(missing)}: it is truncated or not a run's "
                "config"
            )
    try:
        validate(resolve(config))  # a copy: fields left to their defaults stay as stored
    except UsageError as exc:
        raise UsageError(f"config file {path}: {exc}") from None
    return config


# -- the run's cadence ----------------------------------------------------------------


def is_measured(config: TrainConfig, epoch: int) -> bool:
    """Whether the probes run after ``epoch`` (0, every k-th and the last)."""
    return epoch == 0 or epoch % config.measure_every == 0 or epoch == config.epochs


def is_kept(config: TrainConfig, epoch: int) -> bool:
    """Whether ``epoch``'s checkpoint is kept (every ``checkpoint_every`` epochs, and the last)."""
    every = config.checkpoint_every
    return epoch == config.epochs or (every > 0 and epoch % every == 0)


def kept_epochs(config: TrainConfig, upto: int) -> list[int]:
    """Epochs ``<= upto`` whose checkpoints are kept."""
    return [epoch for epoch in range(upto + 1) if is_kept(config, epoch)]
