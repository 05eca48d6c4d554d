"""Robust accuracy of a run's kept checkpoints, written into the run's ``robustness.parquet``.

Each chosen checkpoint is rebuilt with the run's own config and evaluated by
:func:`ncrobust.evaluation.robust_accuracy.evaluate` (AutoAttack, PGD with restarts); the rows
go to ``RUN/robustness.parquet`` as soon as each attack finishes (rows with the same epoch,
split, attack, norm, eps and metric are replaced), so a kill loses nothing already evaluated.
Defaults come from the run: its norm, eps, PGD step (as a fraction of eps) and seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ncrobust.attacks import NORMS
from ncrobust.config import TrainConfig
from ncrobust.data import load_dataset
from ncrobust.errors import UsageError
from ncrobust.evaluation.robust_accuracy import (
    DEFAULT_STEP,
    AttackSpec,
    AutoAttackSpec,
    check_eps,
    evaluate,
    parse_attacks,
    require_torchattacks,
)
from ncrobust.runs.checkpoint import build_model, kept_checkpoints, load_checkpoint, restore
from ncrobust.runs.directory import RunDirectory, find_run_dirs
from ncrobust.runs.tables import (
    ACCURACY,
    AUTOATTACK,
    CHECKS,
    CLEAN,
    PGD_SAME_POINTS,
    POINTS,
    ROBUSTNESS_COLUMNS,
    robustness_frame,
    upsert,
)
from ncrobust.runtime import resolve_device
from ncrobust.views import SPLITS


@dataclass(frozen=True)
class EvalPlan:
    """One run's validated evaluation: what to load and how to attack it."""

    run: RunDirectory
    config: TrainConfig
    files: list[Path]
    norm: str
    eps: list[float]
    step: float
    seed: int
    surrogate: Path | None = None  # a kept checkpoint whose PGD-10 examples are transferred


def plan_run(
    path: Path,
    epochs: str,
    eps: str | None,
    norm: str | None,
    seed: int | None,
    transfer_from: int | None = None,
) -> EvalPlan:
    """Check one run directory and its checkpoints; resolve the run's defaults."""
    run = RunDirectory(path)
    config = run.read_config()
    files = kept_checkpoints(run.checkpoint_dir, epochs)
    surrogate = None
    if transfer_from is not None:
        (surrogate,) = kept_checkpoints(run.checkpoint_dir, str(transfer_from))
    chosen_norm = norm or config.norm
    texts = [e for e in (eps or "").split(",") if e.strip()]
    if not texts and not config.eps > 0:
        raise UsageError(f"{path} was trained with eps = 0: pass --eps")
    given: list[object] = list(texts) if texts else [config.eps]
    radii = [check_eps(e, chosen_norm) for e in given]
    return EvalPlan(
        run=run,
        config=config,
        files=files,
        norm=chosen_norm,
        eps=radii,
        step=config.alpha / config.eps if config.eps > 0 else DEFAULT_STEP,
        seed=config.seed if seed is None else seed,
        surrogate=surrogate,
    )


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per evaluated (run, epoch, split, attack, eps): accuracy, stages, points."""
    keys = ["run", "epoch", "split", "attack", "norm", "eps"]
    wide = frame.pivot_table(index=keys, columns="metric", values="value", sort=False)
    stages = [c for c in wide.columns if c not in (ACCURACY, POINTS)]
    order = [ACCURACY, *stages, POINTS]
    wide = wide[[c for c in order if c in wide.columns]]
    wide.columns.name = None
    return wide.reset_index()


def evaluate_runs(
    runs: Sequence[str | Path],
    *,
    epochs: str = "last",
    splits: str | Sequence[str] = ("test",),
    attacks: str | Sequence[str | AttackSpec] = AUTOATTACK,
    eps: str | None = None,
    norm: str | None = None,
    limit: int | None = None,
    seed: int | None = None,
    batch_size: int = 500,
    device: str | None = None,
    echo: Callable[[str], None] | None = print,
    checks: bool = True,
    transfer_from: int | None = None,
) -> pd.DataFrame:
    """Evaluate the chosen checkpoints of ``runs`` and merge the rows into each run's table.

    Everything (runs, checkpoints, attacks, eps, splits) is checked before any attack runs;
    each attack's rows are written as soon as they exist. Returns the new rows with a ``run``
    column. ``eps`` is comma-separated text (k/255 accepted); defaults come from each run.
    ``checks`` runs the gradient-masking checks (:func:`evaluate`) on the same points;
    ``transfer_from`` (an epoch with a kept checkpoint in every run) adds the transfer check,
    PGD-10 made on that checkpoint and applied to each evaluated one.
    """
    parsed: list[AttackSpec] = parse_attacks(attacks)
    chosen = [s.strip() for s in splits.split(",")] if isinstance(splits, str) else list(splits)
    chosen = [s for s in chosen if s]
    unknown = [s for s in chosen if s not in SPLITS]
    if unknown or not chosen:
        raise UsageError(f"--splits: unknown split(s) {unknown} (use train and/or test)")
    if limit is not None and limit < 1:
        raise UsageError("--limit must be >= 1")
    if batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    if norm is not None and norm not in NORMS:
        raise UsageError(f"unknown norm {norm!r} (known: {', '.join(NORMS)})")
    if any(isinstance(a, AutoAttackSpec) for a in parsed):
        require_torchattacks()
    if transfer_from is not None and not checks:
        raise UsageError("--transfer-from is one of the masking checks: drop --no-checks")
    plans = [plan_run(p, epochs, eps, norm, seed, transfer_from) for p in find_run_dirs(runs)]
    results: list[pd.DataFrame] = []
    for plan in plans:
        config = plan.config
        target = resolve_device(device or config.device)
        dataset = load_dataset(config.dataset, data_dir=config.data_dir)
        model = build_model(config, dataset).to(target)
        surrogate = None
        if plan.surrogate is not None:
            surrogate = build_model(config, dataset).to(target)
            restore(load_checkpoint(plan.surrogate), surrogate)
        for file in plan.files:
            checkpoint = load_checkpoint(file)
            restore(checkpoint, model)

            def write(rows: pd.DataFrame, plan: EvalPlan = plan) -> None:
                plan.run.record(plan.run.robustness_path)  # in the manifest: --overwrite
                upsert(plan.run.robustness_path, robustness_frame(rows), ROBUSTNESS_COLUMNS)
                results.append(rows.assign(run=str(plan.run.root)))
                if echo is not None:
                    attack = str(rows.attack.iloc[0])
                    where = f" {rows.norm.iloc[0]} eps {rows.eps.iloc[0]:.5g}"
                    shown = PGD_SAME_POINTS if attack == CHECKS else ACCURACY
                    accuracy = float(rows[rows.metric == shown].value.iloc[0])
                    echo(
                        f"{plan.run.root}: epoch {rows.epoch.iloc[0]} {rows.split.iloc[0]} "
                        f"{attack}{where if attack != CLEAN else ''}: {shown} {accuracy:.4f}"
                    )

            def stage_done(stage: str, accuracy: float, plan: EvalPlan = plan) -> None:
                if echo is not None:
                    echo(f"{plan.run.root}: autoattack stage {stage}: accuracy {accuracy:.4f}")

            evaluate(
                model,
                dataset,
                attacks=parsed,
                norm=plan.norm,
                eps=plan.eps,
                seed=plan.seed,
                step=plan.step,
                splits=chosen,
                limit=limit,
                batch_size=batch_size,
                device=target,
                epoch=checkpoint.epoch,
                on_result=write,
                checks=checks,
                surrogate=surrogate,
                on_stage=stage_done,
            )
    return pd.concat(results, ignore_index=True)
