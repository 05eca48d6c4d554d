"""The zoo's entries: names in the zoo's own order, selection, leaderboard facts and loading.

Everything model-specific comes from the ``robustbench`` package (its ``model_zoo`` registry and
``robustbench.utils.load_model``); checkpoints live in ``MODEL_DIR/<dataset>/<threat>/<name>.pt``
as the zoo lays them out. Leaderboard facts (paper, architecture, extra data, clean and
AutoAttack accuracy) are read from ``<name>.json`` beside the checkpoint or under ``--info``
(the zoo's ``model_info/<dataset>/<threat>/`` layout) when present locally.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import json
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ncrobust.errors import UsageError

DATASETS = ("cifar10", "cifar100", "imagenet")
THREATS = ("Linf", "L2", "corruptions")
# the threat model's radius in pixel units, as the zoo evaluates it
RADII = {
    ("cifar10", "Linf"): 8 / 255,
    ("cifar100", "Linf"): 8 / 255,
    ("imagenet", "Linf"): 4 / 255,
    ("cifar10", "L2"): 0.5,
    ("cifar100", "L2"): 0.5,
    ("imagenet", "L2"): 3.0,
}
NORMS = {"Linf": "linf", "L2": "l2"}
INSTALL_HINT = "the model zoo needs robustbench: pip install 'ncrobust[zoo]'"

# Taps measured per architecture family (module names; those absent in a model are skipped),
# early to late, besides the penultimate layer. The family is the model class's name.
FAMILY_TAPS: dict[str, tuple[str, ...]] = {
    "WideResNet": ("conv1", "block1", "block2", "block3"),
    "DMWideResNet": ("init_conv", "layer.0", "layer.1", "layer.2"),
    "PreActResNet": ("conv1", "layer1", "layer2", "layer3", "layer4"),
    "DMPreActResNet": ("conv_2d", "layer_0", "layer_1", "layer_2", "layer_3"),
    "ResNet": ("conv1", "layer1", "layer2", "layer3", "layer4"),
    "ViT": ("blocks.0", "blocks.3", "blocks.6", "blocks.9"),
    "XCiT": ("blocks.0", "blocks.3", "blocks.6", "blocks.9"),
    "Swin": ("layers.0", "layers.1", "layers.2", "layers.3"),
}
# the class-name fragments that place a model in a family (first match wins)
_FAMILY_KEYS = (
    ("DMWideResNet", "DMWideResNet"),
    ("DMPreActResNet", "DMPreActResNet"),
    ("WideResNet", "WideResNet"),
    ("PreAct", "PreActResNet"),
    ("XCiT", "XCiT"),
    ("Swin", "Swin"),
    ("VisionTransformer", "ViT"),
    ("ViT", "ViT"),
    ("ResNet", "ResNet"),
)


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: its name, dataset, threat model and the leaderboard facts found locally."""

    name: str
    dataset: str
    threat: str
    info: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.threat}/{self.name}"


def _pkg_resources_shim() -> None:
    """robustbench 1.1.1 imports ``pkg_resources`` (gone from recent setuptools) for one call,
    ``resource_filename``; provide that call when the module is missing."""
    if "pkg_resources" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        return
    shim = types.ModuleType("pkg_resources")

    def resource_filename(package: str, resource: str) -> str:
        return str(importlib.resources.files(package).joinpath(resource))

    shim.resource_filename = resource_filename  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = shim


def _autoattack_alias() -> None:
    """robustbench 1.1.1 imports ``autoattack``, which its dependency ``pyautoattack`` ships as
    ``pyautoattack``; make the old name point at it when only the new one is installed."""
    if importlib.util.find_spec("autoattack") is not None:
        return
    if importlib.util.find_spec("pyautoattack") is None:
        return  # the import of robustbench then names what is missing
    sys.modules["autoattack"] = importlib.import_module("pyautoattack")
    sys.modules["autoattack.state"] = importlib.import_module("pyautoattack.state")


def require_robustbench() -> Any:
    """The ``robustbench.utils`` module, or a UsageError with the install hint."""
    _pkg_resources_shim()
    _autoattack_alias()
    try:
        return importlib.import_module("robustbench.utils")
    except ImportError as exc:
        raise UsageError(f"{INSTALL_HINT} ({exc})") from None


def check_target(dataset: str, threat: str) -> None:
    """Refuse a dataset or threat model the zoo does not have."""
    if dataset not in DATASETS:
        raise UsageError(f"--dataset: unknown {dataset!r} (choose from {', '.join(DATASETS)})")
    if threat not in THREATS:
        raise UsageError(f"--threat: unknown {threat!r} (choose from {', '.join(THREATS)})")


def registry(dataset: str, threat: str) -> dict[str, dict[str, Any]]:
    """The zoo's registry of ``dataset``/``threat`` (name -> entry), in the zoo's own order."""
    check_target(dataset, threat)
    utils = require_robustbench()
    enums = importlib.import_module("robustbench.model_zoo.enums")
    models = utils.all_models[enums.BenchmarkDataset(dataset)]
    threat_model = enums.ThreatModel(threat)
    if threat_model not in models:
        raise UsageError(f"the zoo has no {threat} models for {dataset}")
    return dict(models[threat_model])


def select(
    dataset: str, threat: str, names: Sequence[str] = (), *, every: bool = False, top: int = 0
) -> list[str]:
    """The model names to measure: ``names`` as given (each checked against the zoo), ``every``
    model, or the first ``top`` in the zoo's own order; exactly one of the three."""
    chosen = sum([bool(names), every, top > 0])
    if chosen != 1:
        raise UsageError("give exactly one of --models A,B,..., --all or --top K")
    if top < 0:
        raise UsageError(f"--top must be >= 1, got {top}")
    known = list(registry(dataset, threat))
    if names:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageError(
                f"not in the zoo's {dataset}/{threat} models: {', '.join(unknown)} "
                f"({len(known)} known, e.g. {', '.join(known[:3])})"
            )
        if len(set(names)) != len(names):
            raise UsageError("--models names a model twice")
        return list(names)
    return known if every else known[:top]


def checkpoint_path(model_dir: Path, dataset: str, threat: str, name: str) -> Path:
    """Where the zoo's loader keeps (or downloads) the checkpoint of ``name``."""
    return Path(model_dir) / dataset / threat / f"{name}.pt"


def read_info(info_dirs: Sequence[Path], dataset: str, threat: str, name: str) -> dict[str, Any]:
    """The leaderboard JSON of ``name`` from the first of ``info_dirs`` holding
    ``<dataset>/<threat>/<name>.json``; empty when none does (nothing is downloaded)."""
    for folder in info_dirs:
        path = Path(folder) / dataset / threat / f"{name}.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UsageError(f"{path}: not a readable leaderboard JSON ({exc})") from None
            if not isinstance(data, dict):
                raise UsageError(f"{path}: expected a JSON object")
            return data
    return {}


def load(entry: ZooEntry, model_dir: Path) -> nn.Module:
    """The model of ``entry`` in eval mode, through the zoo's own loader (which downloads the
    checkpoint into ``model_dir`` when it is missing and the machine is online)."""
    utils = require_robustbench()
    try:
        model = utils.load_model(
            model_name=entry.name,
            model_dir=str(model_dir),
            dataset=entry.dataset,
            threat_model=entry.threat,
        )
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        where = checkpoint_path(model_dir, entry.dataset, entry.threat, entry.name)
        raise UsageError(f"cannot load zoo model {entry.key} (checkpoint {where}): {exc}") from exc
    return model.eval()


def family(model: nn.Module) -> str:
    """The architecture family of ``model``: the first of its classes (the zoo subclasses its
    architectures per paper, e.g. ``Rice2020OverfittingNet(WideResNet)``) whose name places it
    in a family; else the class name."""
    for cls in type(model).__mro__:
        for fragment, found in _FAMILY_KEYS:
            if fragment.lower() in cls.__name__.lower():
                return found
    return type(model).__name__


def family_taps(model: nn.Module) -> list[str]:
    """The stated taps of the model's family that the model has, early to late."""
    present = dict(model.named_modules())
    return [tap for tap in FAMILY_TAPS.get(family(model), ()) if tap in present]
