"""The paper's training loop with Neural Collapse measured every k epochs, resumable.

``train(config)`` validates everything before it computes or writes, then runs epochs
``1..E``: SGD with the per-iteration piecewise learning rate on whole-split device tensors;
after epoch 0 (initialisation), every ``measure_every`` epochs and the last, the probes
measure the planned views; each epoch's rows are appended atomically, then the rolling
``last`` checkpoint is written, so a kill loses at most the epoch in progress and
``train(config, resume=True)`` reproduces the uninterrupted table exactly.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ncrobust.config import TrainConfig, read_config, validate, validate_layers, write_config
from ncrobust.data import ImageDataset, batches, load_dataset, num_batches
from ncrobust.errors import TrainingDiverged, UsageError
from ncrobust.models import TappedClassifier, create_model
from ncrobust.runs import FIT_VIEW, JOB_ENTRIES, OUTPUT_LAYER, RunDirectory, metric_rows
from ncrobust.runtime import autocast, eval_mode, make_generator, seed_everything
from ncrobust.training import distributed
from ncrobust.training.checkpoint import LAST, epoch_name, load_checkpoint, restore, save_checkpoint
from ncrobust.training.objectives import objective_step
from ncrobust.training.probes import (
    PerturbedSet,
    Prober,
    ProbeSpec,
    derive_seed,
    tapped_extractor,
)
from ncrobust.training.schedule import piecewise_lr


@dataclass
class Session:
    """Everything a run holds in memory: config, data, model, optimizer, output."""

    config: TrainConfig
    run: RunDirectory
    device: torch.device
    dataset: ImageDataset
    model: TappedClassifier
    optimizer: torch.optim.SGD
    layers: list[str]
    final_layers: list[str]
    start_epoch: int
    progress: bool
    writer: Any = None
    context: distributed.Context = field(default_factory=distributed.Context)
    parallel: torch.nn.Module | None = None  # DistributedDataParallel to train through

    @property
    def trained(self) -> torch.nn.Module:
        """The module the training loss is computed through (DDP under torchrun)."""
        return self.model if self.parallel is None else self.parallel


def prepare(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Session:
    """Check the configuration, data, model and output directory; write nothing on failure."""
    out = Path(config.out)
    if resume:
        if not (out / "config.yaml").is_file():
            raise UsageError(f"cannot resume: {out} holds no run (no config.yaml)")
        if overwrite:
            raise UsageError("--resume and --overwrite exclude each other")
    elif out.exists() and (
        not out.is_dir() or any(p.name not in JOB_ENTRIES for p in out.iterdir())
    ):
        if not out.is_dir():
            raise UsageError(f"output path {out} exists and is not a directory")
        if not overwrite:
            raise UsageError(
                f"output directory {out} is not empty: pass --resume {out} to continue that run "
                "or --overwrite to replace it"
            )
    config = validate(config)
    context = distributed.launch_context()
    if config.batch_size % context.world_size:
        raise UsageError(
            f"batch_size {config.batch_size} (the global batch) is not divisible by the "
            f"{context.world_size} processes launched: each process takes batch_size / processes"
        )
    device = distributed.process_device(config.device, context)
    if config.tensorboard:
        try:
            from torch.utils import tensorboard  # noqa: F401
        except ImportError as exc:  # pragma: no cover - tensorboard is a declared extra
            raise UsageError("--tensorboard needs the tensorboard package installed") from exc
    dataset = load_dataset(config.dataset, data_dir=config.data_dir)
    last_batch = len(dataset.train) % config.batch_size
    if 0 < last_batch < context.world_size:
        raise UsageError(
            f"the last batch of each epoch ({last_batch} of {len(dataset.train)} samples) is "
            f"smaller than the {context.world_size} processes: choose another batch_size"
        )
    seed_everything(config.seed)
    model = build_model(config, dataset)
    layers = validate_layers(config, model.layers())
    final_layers = layers
    if config.final_layers:
        final_layers = validate_layers(
            TrainConfig(model=config.model, layers=config.final_layers), model.layers()
        )
    model = model.to(device)
    if device.type == "cuda" and config.channels_last:
        model = model.to(memory_format=torch.channels_last)  # NHWC convs run faster on tensor cores
    # every rank has checked everything above before rank 0 touches the output directory
    context, device = distributed.setup(config.device)
    distributed.barrier()
    parallel = distributed.wrap(model, device, config.sync_bn)  # SyncBN first: same parameters
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    run = RunDirectory(out)
    start_epoch = 0
    if resume:
        checkpoint = load_checkpoint(run.checkpoint_dir / LAST)
        restore(checkpoint, model, optimizer)
        start_epoch = checkpoint.epoch
    elif out.exists() and overwrite and context.is_main:
        shutil.rmtree(out)
    dataset = dataset.to(device)
    if progress is None:
        progress = sys.stderr.isatty()
    progress = progress and context.is_main
    return Session(
        config,
        run,
        device,
        dataset,
        model,
        optimizer,
        layers,
        final_layers,
        start_epoch,
        progress,
        context=context,
        parallel=None if parallel is model else parallel,
    )


def build_model(config: TrainConfig, dataset: ImageDataset) -> TappedClassifier:
    """The run's model, shaped for ``dataset`` and normalising with its constants."""
    return create_model(
        config.model,
        num_classes=dataset.num_classes,
        in_channels=dataset.channels,
        image_size=dataset.image_size,
        mean=dataset.mean,
        std=dataset.std,
    )


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    stop_after: int | None = None,
) -> RunDirectory:
    """Train (or continue) the run of ``config`` and return its directory.

    ``stop_after`` ends the session after that epoch as an interruption would (tests use it).
    Under ``torchrun`` every process calls this; only rank 0 writes the run directory.
    """
    joined = distributed.current().distributed  # a process group that the caller owns
    try:
        return _train(config, resume, overwrite, progress, stop_after)
    finally:
        if not joined:
            distributed.shutdown()


def _train(
    config: TrainConfig,
    resume: bool,
    overwrite: bool,
    progress: bool | None,
    stop_after: int | None,
) -> RunDirectory:
    session = prepare(config, resume=resume, overwrite=overwrite, progress=progress)
    run, config, main = session.run, session.config, session.context.is_main
    world = session.context.world_size
    ranks = distributed.describe_ranks(session.device)
    recorded = config.world_size  # config.yaml records how the run is executed now
    config = session.config = dataclasses.replace(config, world_size=world)
    if main and resume:
        run.truncate_after(session.start_epoch)
        run.log(f"resumed at epoch {session.start_epoch} with {world} process(es): {ranks}")
        if recorded != world:
            run.log(f"world_size {recorded} -> {world}")
            write_config(config, run.config_path)
    elif main:
        run.root.mkdir(parents=True, exist_ok=True)
        write_config(config, run.config_path)
        run.log(f"run {run.root} on {session.device}: {_describe(config)}")
        if world > 1:
            sync = "synchronised" if config.sync_bn else "per-process"
            run.log(f"{world} processes, {sync} BatchNorm: {ranks}")
    if config.tensorboard and main:
        from torch.utils.tensorboard import SummaryWriter

        session.writer = SummaryWriter(str(run.tensorboard_dir))
    try:
        if not resume:
            rows, stats = measure(session, 0, None)
            if main:
                run.append(rows, stats)
                _save(session, 0)
                _scalars(session, 0, rows)
        for epoch in range(session.start_epoch + 1, config.epochs + 1):
            _epoch(session, epoch)
            if stop_after is not None and epoch >= stop_after and epoch < config.epochs:
                return run
    finally:
        if session.writer is not None:
            session.writer.close()
    if main:
        run.done_path.write_text(f"{config.epochs}\n")
    return run


def resume_config(out: str | Path, device: str | None = None) -> TrainConfig:
    """The stored config of the run in ``out`` (optionally on another device)."""
    path = Path(out) / "config.yaml"
    if not path.is_file():
        raise UsageError(f"cannot resume: {out} holds no run (no config.yaml)")
    config = read_config(path)
    config.out = str(out)
    if device is not None:
        config.device = device
    return config


def is_measured(config: TrainConfig, epoch: int) -> bool:
    """Whether the probes run after ``epoch`` (0, every k-th and the last)."""
    return epoch == 0 or epoch % config.measure_every == 0 or epoch == config.epochs


# -- one epoch ---------------------------------------------------------------------------


def _epoch(session: Session, epoch: int) -> None:
    config, run = session.config, session.run
    keep_adv = is_measured(config, epoch) and ("train", "train_adv") in config.probe_plan()
    started = time.perf_counter()
    fit, perturbed = _fit(session, epoch, keep_adv)
    seconds = time.perf_counter() - started
    # the sums were all-reduced: every rank takes the same decision
    if not all(torch.isfinite(torch.tensor(v)) for v in fit.values()):
        last = run.checkpoint_dir / LAST
        raise TrainingDiverged(
            f"non-finite training loss in epoch {epoch} of {run.root}; the last good checkpoint "
            f"({last}, epoch {epoch - 1}) and all earlier metrics are kept"
        )
    fit["seconds"] = seconds
    rows: list[dict[str, Any]] = []
    stats: list[dict[str, Any]] = []
    if is_measured(config, epoch):
        started = time.perf_counter()
        rows, stats = measure(session, epoch, perturbed)
        fit["measure_seconds"] = time.perf_counter() - started
    if not session.context.is_main:
        return
    rows = metric_rows(epoch, "train", FIT_VIEW, OUTPUT_LAYER, fit) + rows
    run.append(rows, stats)
    _save(session, epoch)
    _report(session, epoch, fit, rows)


def _fit(
    session: Session, epoch: int, keep_adv: bool
) -> tuple[dict[str, float], PerturbedSet | None]:
    """One pass of SGD over the training split; returns epoch means and the kept perturbations."""
    config, model, optimizer, device = (
        session.config,
        session.model,
        session.optimizer,
        session.device,
    )
    train_split = session.dataset.train
    n = len(train_split)
    total = num_batches(n, config.batch_size)
    rank, world = session.context.rank, session.context.world_size
    trained = session.trained
    shuffle = make_generator(derive_seed(config.seed, "shuffle", epoch))
    attack = make_generator(derive_seed(config.seed, "attack", epoch), device)
    kept = None
    if keep_adv:  # this rank's perturbed samples: its shard of the train_adv view
        mine = sum(
            _rows(n, config.batch_size, i, rank, world)[1]
            - _rows(n, config.batch_size, i, rank, world)[0]
            for i in range(total)
        )
        kept = PerturbedSet(
            torch.empty((mine, *train_split.images.shape[1:]), dtype=torch.float32, device=device),
            torch.empty(mine, dtype=torch.int64, device=device),
        )
    sums: dict[str, torch.Tensor] = {}
    mode = eval_mode(model) if config.mode == "trades" and config.trades_bn_eval else nullcontext()
    model.train()
    position = 0
    with mode:
        for i, (x, y) in enumerate(
            _progress(
                batches(
                    train_split,
                    config.batch_size,
                    shuffle=True,
                    generator=shuffle,
                    augment=config.augment,
                    shard=(rank, world),
                ),
                session,
                total,
                f"epoch {epoch}/{config.epochs}",
            )
        ):
            lr = piecewise_lr(
                epoch - 1 + (i + 1) / total,
                config.epochs,
                config.lr,
                config.lr_milestones,
                config.lr_gamma,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            if device.type == "cuda" and config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            rows = _rows(n, config.batch_size, i, rank, world)
            with autocast(device, config.precision):
                out = objective_step(
                    trained, x, y, config, attack, keep_adv, attack_model=model, rows=rows
                )
            optimizer.zero_grad(set_to_none=True)
            loss = out.loss
            if (rows[1] - rows[0]) * world != rows[2]:  # an uneven last batch: DDP averages
                loss = loss * ((rows[1] - rows[0]) * world / rows[2])  # ranks, not samples
            loss.backward()
            optimizer.step()
            batch = y.shape[0]
            # running sums stay on the device: no host synchronisation inside the epoch
            _add(sums, "loss", out.loss.detach().double() * batch)
            _add(sums, "accuracy", (out.logits.argmax(1) == y).sum().double())
            for name, value in out.parts.items():
                _add(sums, name, value.double() * batch)
            if kept is not None:
                kept.inputs[position : position + batch] = out.inputs.detach().float()
                kept.labels[position : position + batch] = y
            position += batch
    names = list(sums)  # the same order on every rank: one all-reduce for all sums
    totals = distributed.all_reduce_sum(torch.stack([sums[name] for name in names])).tolist()
    means = {name: value / n for name, value in zip(names, totals, strict=True)}
    means["lr"] = lr
    return means, kept


def _rows(n: int, batch_size: int, index: int, rank: int, world: int) -> distributed.Rows:
    """This rank's rows (start, stop, total) of global batch ``index`` of an epoch of ``n``."""
    total = min(batch_size, n - index * batch_size)
    return (*distributed.shard_rows(total, rank, world), total)


def _add(sums: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
    sums[name] = sums[name] + value if name in sums else value


# -- measurement and checkpoints ----------------------------------------------------------


def measure(
    session: Session, epoch: int, train_adv: PerturbedSet | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Probe rows of ``epoch`` for the session's model (all planned views and layers)."""
    config = session.config
    plan = config.probe_plan()
    always = [("test", "clean"), ("test", "pgd")]  # test accuracy and robustness, always recorded
    layers = session.final_layers if epoch == config.epochs else session.layers
    spec = ProbeSpec(
        plan=plan,
        layers=layers,
        norm=config.norm,
        eps=config.eps,
        alpha=config.alpha,
        steps=config.steps,
        gaussian_std=config.gaussian_std,
        batch_size=config.measure_batch_size,
        cache_bytes=config.feature_cache_mb << 20,
        seed=config.seed,
        precision=config.precision,
        accuracy_only=[pair for pair in always if pair not in plan],
        radii=config.view_radii(),
    )
    model = session.model
    if not config.sync_bn:
        distributed.broadcast_buffers(model)  # every rank measures rank 0's BN statistics
    classifier = model.classifier
    prober = Prober(
        model,
        tapped_extractor(model),
        spec,
        session.dataset.num_classes,
        classifier.weight,
        classifier.bias,
        session.device,
        shard=(session.context.rank, session.context.world_size),
    )
    splits = {"train": session.dataset.train, "test": session.dataset.test}
    if not session.progress:
        result = prober.run(splits, epoch, train_adv)
        return result.metrics, result.stats
    from tqdm import tqdm

    views = len(set(plan) | {("train", "clean")} | set(spec.accuracy_only))
    with tqdm(total=views, desc=f"measure epoch {epoch}", leave=False, dynamic_ncols=True) as bar:

        def advance(split: str, view: str) -> None:
            bar.set_postfix_str(f"{split}/{view}")
            bar.update()

        result = prober.run(splits, epoch, train_adv, on_view=advance)
    return result.metrics, result.stats


def _save(session: Session, epoch: int) -> None:
    config, run = session.config, session.run
    save_checkpoint(run.checkpoint_dir / LAST, session.model, session.optimizer, epoch)
    keep = epoch == config.epochs or (
        config.checkpoint_every > 0 and epoch % config.checkpoint_every == 0
    )
    if keep:
        shutil.copyfile(run.checkpoint_dir / LAST, run.checkpoint_dir / epoch_name(epoch))


# -- reporting -----------------------------------------------------------------------------


def _describe(config: TrainConfig) -> str:
    return (
        f"{config.dataset}/{config.model} mode={config.mode} norm={config.norm} "
        f"eps={config.eps:.4g} alpha={config.alpha:.4g} steps={config.steps} "
        f"epochs={config.epochs} seed={config.seed}"
    )


def _report(
    session: Session, epoch: int, fit: dict[str, float], rows: list[dict[str, Any]]
) -> None:
    config, run = session.config, session.run
    parts = [
        f"[{run.root.name}] epoch {epoch}/{config.epochs}",
        f"loss {fit['loss']:.4f}",
        f"acc {fit['accuracy']:.4f}",
        f"lr {fit['lr']:.4g}",
        f"{fit['seconds']:.1f}s",
    ]
    probe = {(r["split"], r["view"], r["layer"], r["metric"]): r["value"] for r in rows}
    for split, view in (("test", "clean"), ("test", "pgd")):
        if (split, view, OUTPUT_LAYER, "accuracy") in probe:
            parts.append(f"{split}/{view} acc {probe[(split, view, OUTPUT_LAYER, 'accuracy')]:.4f}")
    if ("train", "clean", "penultimate", "nc1") in probe:
        parts.append(f"nc1 {probe[('train', 'clean', 'penultimate', 'nc1')]:.4g}")
    line = " | ".join(parts)
    run.log(line)
    if not session.progress:
        print(line, flush=True)
    _scalars(session, epoch, rows)


def _scalars(session: Session, epoch: int, rows: list[dict[str, Any]]) -> None:
    """TensorBoard scalars of the rows, tagged split/view/layer/metric (with --tensorboard)."""
    if session.writer is not None:
        for row in rows:
            tag = f"{row['split']}/{row['view']}/{row['layer']}/{row['metric']}"
            session.writer.add_scalar(tag, row["value"], epoch)


def _progress(iterable: Any, session: Session, total: int, desc: str) -> Iterator[Any]:
    if not session.progress:
        return iter(iterable)
    from tqdm import tqdm

    return iter(tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True))
