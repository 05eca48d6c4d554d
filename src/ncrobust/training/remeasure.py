"""Measuring a trained run's checkpoints again, with the run's own config and probes.

A checkpoint's numbers equal the training-time measurement of its epoch; ``--eps`` studies
(the paper's Figure 16) measure the same checkpoints at several radii, the step scaled
linearly. Used by ``ncrobust measure``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from ncrobust.config import TrainConfig
from ncrobust.data import load_dataset
from ncrobust.probing.measure import AttackSettings, measure_tables
from ncrobust.runs.checkpoint import build_model, load_checkpoint, restore, run_identity
from ncrobust.runs.directory import RunDirectory
from ncrobust.runs.tables import METRIC_COLUMNS, STATS_COLUMNS, upsert
from ncrobust.views import scaled_step


def measure_checkpoints(
    run_dir: RunDirectory,
    config: TrainConfig,
    files: Sequence[Path],
    *,
    views: list[str],
    splits: list[str],
    eps_list: Sequence[float] = (),
    layers: str | None = None,
    pool: int | None = None,
    batch_size: int | None = None,
    device: torch.device,
    main: bool = True,
) -> int:
    """Measure the checkpoint ``files`` of ``run_dir`` with its ``config``; rank 0 (``main``)
    writes ``measurements.parquet`` / ``measurement_stats.parquet``, or ``eps_study.parquet``
    with ``eps_list`` (one block per radius, the PGD step scaled linearly)."""
    loaded = [load_checkpoint(f) for f in files]  # every file is checked before any compute
    dataset = load_dataset(config.dataset, data_dir=config.data_dir)
    identity = run_identity(config, dataset)
    for checkpoint in loaded:
        checkpoint.check_identity(identity)
        checkpoint.check_epoch(config.epochs)
    model = build_model(config, dataset).to(device)
    chosen = layers if layers is not None else ("penultimate" if eps_list else "all")
    taps = [layer for layer in chosen.split(",") if layer]
    data = {name: dataset.split(name) for name in splits if name in ("train", "test")}
    if "train" not in data:
        data["train"] = dataset.train  # the reference means; its rows are dropped below
    radii = list(eps_list) or [config.eps]
    settings = [(eps, _attack_at(config, eps)) for eps in radii]
    frames, stat_frames, eps_frames = [], [], []
    for checkpoint in loaded:
        restore(checkpoint, model)
        for eps, attack in settings:
            metrics, stats = measure_tables(
                model,
                data,
                layers=taps,
                views=views if not eps_list else ["clean", "pgd"],
                attack=attack,
                batch_size=batch_size or config.measure_batch_size,
                pool=pool,
                device=device,
                epoch=checkpoint.epoch,
                seed=config.seed,
            )
            metrics = metrics[metrics.split.isin(splits)]
            stats = stats[stats.split.isin(splits)]
            if eps_list:
                eps_frames.append(metrics.assign(eps=eps))
            else:
                frames.append(metrics)
                stat_frames.append(stats)
            if main:
                at = f" at eps {eps:.5g}" if eps_list else ""
                print(f"measured epoch {checkpoint.epoch}{at}")
    if not main:
        return 0  # rank 0 writes
    if eps_list:
        run_dir.record(run_dir.eps_study_path)  # in the manifest: --overwrite deletes it
        upsert(run_dir.eps_study_path, pd.concat(eps_frames), ("eps", *METRIC_COLUMNS))
    else:
        run_dir.record(run_dir.measurements_path, run_dir.measurement_stats_path)
        upsert(run_dir.measurements_path, pd.concat(frames), METRIC_COLUMNS)
        upsert(run_dir.measurement_stats_path, pd.concat(stat_frames), STATS_COLUMNS)
    return 0


def _attack_at(config: TrainConfig, eps: float) -> AttackSettings:
    """The run's threat model at radius ``eps`` (the step scaled linearly, as Figure 16)."""
    alpha = config.alpha if eps == config.eps else scaled_step(config.alpha, config.eps, eps)
    return AttackSettings(
        config.norm, eps, alpha, config.steps, config.gaussian_std, config.precision
    )
