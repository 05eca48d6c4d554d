"""Measure one zoo model into a run-like directory, as a trained run is measured.

The directory ``OUT/<name>/`` holds ``zoo.yaml`` (the zoo entry, its paper and leaderboard facts,
the family, taps and classifier measured, and a ``config`` mapping of run fields so ``report``,
``plot --where`` and ``study`` read it like a run), ``metrics.parquet`` and
``attack_stats.parquet`` (clean, PGD at the threat model's radius, Gaussian and targeted views;
penultimate layer and the family's taps), ``robustness.parquet`` (the project's own attack on
the same test points beside the zoo's reported clean/AutoAttack accuracy) and ``DONE``.
Every file is written atomically; a directory with ``DONE`` and the same settings is skipped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from torch import nn

from ncrobust.atomic import atomic_write_parquet, atomic_write_text
from ncrobust.data import ImageDataset, load_dataset
from ncrobust.errors import UsageError
from ncrobust.evaluation.robust_accuracy import evaluate, parse_attack
from ncrobust.probing.measure import AttackSettings, list_layers, measure_tables
from ncrobust.runs.directory import ZOO_FILE, RunDirectory
from ncrobust.runs.tables import ACCURACY, AUTOATTACK, CLEAN, METRIC_COLUMNS, robustness_frame
from ncrobust.runs.tables import typed as typed_table
from ncrobust.views import PENULTIMATE
from ncrobust.zoo import catalog
from ncrobust.zoo.catalog import ZooEntry

VIEWS = ("clean", "pgd", "gaussian", "targeted")
LEADERBOARD = "leaderboard:" + AUTOATTACK  # the zoo's reported numbers in robustness.parquet
EPOCH = 1  # a zoo model is measured once, as a trained run's last epoch
DONE_FILE = "DONE"


@dataclass(frozen=True)
class ZooOptions:
    """How every model is measured (the same for all models of one ``ncrobust zoo`` call)."""

    model_dir: str
    info_dirs: tuple[str, ...] = ()
    points: int = 500
    attack: str = "pgd:steps=20"
    steps: int = 10
    pool: int | None = 4
    batch_size: int = 256
    device: str | None = None
    seed: int = 0
    data: str | None = None  # the data measured on; default the zoo's dataset
    data_dir: str | None = None

    def check(self) -> None:
        """Refuse bad settings with one line each, before any model is loaded."""
        if self.points < 10:
            raise UsageError(f"--points must be >= 10, got {self.points}")
        if self.steps < 1:
            raise UsageError(f"--steps must be >= 1, got {self.steps}")
        if self.pool is not None and self.pool < 1:
            raise UsageError(f"--pool must be >= 1, got {self.pool}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {self.batch_size}")
        parse_attack(self.attack)


def threat_settings(dataset: str, threat: str, steps: int) -> AttackSettings:
    """PGD at the threat model's radius (step eps/4, the paper's ratio) and Gaussian noise of
    the same l_inf scale as the paper's (std = eps for l_inf; 8/255 otherwise)."""
    if threat not in catalog.NORMS:
        raise UsageError(f"--threat {threat}: NC views need an l_inf or l_2 radius")
    eps = catalog.RADII[(dataset, threat)]
    norm = catalog.NORMS[threat]
    std = eps if norm == "linf" else 8 / 255
    return AttackSettings(norm=norm, eps=eps, alpha=eps / 4, steps=steps, gaussian_std=std)


def load_points(dataset: str, options: ZooOptions) -> ImageDataset:
    """The data measured on (the zoo's dataset unless ``options.data`` names another), its first
    ``points`` train and test images: the train split gives the class means of the NCC."""
    name = options.data or dataset
    data = load_dataset(name, data_dir=options.data_dir)
    n = options.points
    return ImageDataset(
        name=data.name,
        train=type(data.train)(data.train.images[:n], data.train.labels[:n]),
        test=type(data.test)(data.test.images[:n], data.test.labels[:n]),
        num_classes=data.num_classes,
        mean=data.mean,
        std=data.std,
        class_names=data.class_names,
    )


def run_dir(out: Path, entry: ZooEntry) -> Path:
    """The run-like directory of ``entry`` under ``out``."""
    return Path(out) / entry.name


def is_done(folder: Path, options: ZooOptions) -> bool:
    """Whether ``folder`` holds a finished measurement with these options."""
    if not (folder / DONE_FILE).is_file() or not (folder / ZOO_FILE).is_file():
        return False
    try:
        stored = yaml.safe_load((folder / ZOO_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # unreadable: measured again
    return isinstance(stored, dict) and stored.get("options") == _plain(asdict(options))


def _plain(value: Any) -> Any:
    """Tuples as lists, so options compare equal after a YAML round trip."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _percent(value: Any) -> float | None:
    """A leaderboard percentage (``"53.42"``) as a fraction; None when absent or unreadable."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number / 100 if math.isfinite(number) else None


def leaderboard_rows(entry: ZooEntry, norm: str, eps: float) -> list[dict[str, Any]]:
    """The zoo's reported clean and AutoAttack accuracy as robustness rows (empty if unknown)."""
    rows = []
    for attack, key, radius in ((CLEAN, "clean_acc", 0.0), (LEADERBOARD, "autoattack_acc", eps)):
        value = _percent(entry.info.get(key))
        if value is not None:
            rows.append(
                {"epoch": EPOCH, "split": "test", "attack": attack + "@zoo", "norm": norm,
                 "eps": radius, "metric": ACCURACY, "value": value}
            )  # fmt: skip
    return rows


def measure_entry(
    entry: ZooEntry,
    model: nn.Module,
    data: ImageDataset,
    out: Path,
    options: ZooOptions,
    log: Callable[[str], None] = print,
) -> Path:
    """Measure ``model`` (the zoo's ``entry``) on ``data`` and write its run-like directory."""
    attack = threat_settings(entry.dataset, entry.threat, options.steps)
    taps = catalog.family_taps(model)
    device = options.device
    splits = {"train": (data.train.images, data.train.labels),
              "test": (data.test.images, data.test.labels)}  # fmt: skip
    example = data.train.images[:2]
    layers_table = list_layers(model, example)
    head = str(layers_table.loc[layers_table.layer == PENULTIMATE, "module"].iloc[0])
    classifier = head.removeprefix("input of ")
    folder = run_dir(out, entry)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE_FILE).unlink(missing_ok=True)
    log(f"{entry.name}: measuring {len(VIEWS)} views on {[PENULTIMATE, *taps]}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        metrics, stats = measure_tables(
            model, splits, layers=[PENULTIMATE, *taps], views=list(VIEWS), attack=attack,
            pool=options.pool, batch_size=options.batch_size, device=device, epoch=EPOCH,
            seed=options.seed,
        )  # fmt: skip
    metrics.attrs = {}  # the per-class detail stays out of the table (pandas copies attrs)
    directory = RunDirectory(folder)
    atomic_write_parquet(typed_table(metrics.astype({"layer": str}), METRIC_COLUMNS),
                         directory.metrics_path)  # fmt: skip
    atomic_write_parquet(stats.astype({"layer": str}), directory.stats_path)
    log(f"{entry.name}: robust accuracy ({options.attack}) on {len(data.test.labels)} points")
    robust = evaluate(
        model, {"test": (data.test.images, data.test.labels)}, attacks=[options.attack],
        norm=attack.norm, eps=attack.eps, seed=options.seed, limit=options.points,
        batch_size=options.batch_size, device=device, epoch=EPOCH,
    )  # fmt: skip
    zoo_rows = robustness_frame(leaderboard_rows(entry, attack.norm, attack.eps))
    table = pd.concat([robust, zoo_rows], ignore_index=True) if len(zoo_rows) else robust
    atomic_write_parquet(robustness_frame(table), directory.robustness_path)
    record = {
        "zoo": {"name": entry.name, "dataset": entry.dataset, "threat": entry.threat,
                "paper": entry.info.get("name"), "link": entry.info.get("link"),
                "venue": entry.info.get("venue"), "info": entry.info},
        "architecture": {"class": type(model).__name__, "family": catalog.family(model),
                         "taps": taps, "classifier": classifier,
                         "parameters": sum(p.numel() for p in model.parameters())},
        "config": run_config(entry, data.name, attack, taps, folder),
        "options": _plain(asdict(options)),
    }  # fmt: skip
    text = yaml.safe_dump(record, sort_keys=False, allow_unicode=True)
    atomic_write_text(directory.root / ZOO_FILE, text)
    atomic_write_text(folder / DONE_FILE, f"{entry.key}\n")
    return folder


@dataclass(frozen=True)
class ZooJob:
    """One zoo model as a picklable job for the executors: load its checkpoint, measure it into
    ``out/<name>/`` and return ``measured``; ``skipped`` when it is done with these options."""

    entry: ZooEntry
    out: str
    options: ZooOptions
    threads: int | None = None  # CPU threads of torch in this job (None: torch's default)

    def __call__(self) -> str:
        if self.threads:
            torch.set_num_threads(self.threads)
        if is_done(run_dir(Path(self.out), self.entry), self.options):
            return "skipped"
        model = catalog.load(self.entry, Path(self.options.model_dir))
        data = load_points(self.entry.dataset, self.options)
        measure_entry(self.entry, model, data, Path(self.out), self.options)
        return "measured"


def run_config(
    entry: ZooEntry, data_name: str, attack: AttackSettings, taps: list[str], folder: Path
) -> dict[str, Any]:
    """The run fields a study reads (dataset, model, mode, norm, eps, ...), for this model:
    ``mode`` is ``st`` for the zoo's undefended ``Standard`` model and ``at`` otherwise (the
    zoo's own training method is in the entry's info)."""
    return {
        "dataset": data_name,
        "model": entry.name,
        "mode": "st" if entry.name == "Standard" else "at",
        "norm": attack.norm,
        "eps": attack.eps,
        "alpha": attack.alpha,
        "steps": attack.steps,
        "gaussian_std": attack.gaussian_std,
        "epochs": EPOCH,
        "measure_every": 1,
        "seed": 0,
        "views": list(VIEWS),
        "layers": [PENULTIMATE, *taps],
        "out": str(folder),
    }


def free_memory() -> None:
    """Release the accelerator's cached memory between models."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


COST_NOTE = "cost in forward+backward passes of one model (its size multiplies the time)"


def estimated_passes(options: ZooOptions) -> int:
    """Forward+backward passes one model takes: the NC views on train and test (PGD and targeted
    attacks of ``steps`` steps, two NC passes each view) and the robust-accuracy attack."""
    views = 2 * options.points * (2 * options.steps + 2 * len(VIEWS))
    spec = parse_attack(options.attack)
    attack_steps = getattr(spec, "steps", 0) * getattr(spec, "restarts", 1) or 1000
    return views + options.points * (attack_steps + 1)


def plan_line(entry: ZooEntry, out: Path, options: ZooOptions) -> str:
    """One model of ``--dry-run``: whether it is done, where its checkpoint is, its cost."""
    folder = run_dir(out, entry)
    state = "done" if is_done(folder, options) else "to measure"
    path = catalog.checkpoint_path(Path(options.model_dir), entry.dataset, entry.threat, entry.name)
    size = f"{path.stat().st_size / 2**20:.0f} MiB" if path.is_file() else "to download"
    passes = estimated_passes(options)
    return f"{entry.key}: {state}; checkpoint {path} ({size}); ~{passes:,} passes"
