"""The paper's training loop with Neural Collapse measured every k epochs, resumable.

``train(config)`` validates everything before it computes or writes, then runs epochs
``1..E``: SGD with the per-iteration piecewise learning rate on whole-split device tensors;
after epoch 0 (initialisation), every ``measure_every`` epochs and the last, the probes
measure the planned views; each epoch's rows are appended atomically, then the rolling
``last`` checkpoint is written, so a kill loses at most the epoch in progress and
``train(config, resume=True)`` reproduces the uninterrupted table exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ncrobust import distributed
from ncrobust.atomic import atomic_copy, check_fault_plan
from ncrobust.config import (
    TrainConfig,
    is_kept,
    is_measured,
    kept_epochs,
    read_config,
    validate,
    validate_layers,
)
from ncrobust.data import ImageDataset, batches, load_dataset, num_batches
from ncrobust.errors import DiskFull, Terminated, TrainingDiverged, UsageError
from ncrobust.models import TappedClassifier
from ncrobust.probing.engine import PerturbedSet, Prober, ProbeSpec, derive_seed
from ncrobust.runs.checkpoint import (
    LAST,
    Checkpoint,
    build_model,
    epoch_name,
    kept_checkpoints,
    load_checkpoint,
    restore,
    run_identity,
    save_checkpoint,
)
from ncrobust.runs.directory import Claim, RunDirectory
from ncrobust.runs.directory import claim as claim_run
from ncrobust.runs.tables import metric_rows
from ncrobust.runtime import (
    Compiled,
    autocast,
    compile_wanted,
    determinism,
    eval_mode,
    make_generator,
    make_sgd,
    resolve_device,
    seed_everything,
)
from ncrobust.tracking import Tracker, check_tracking, open_tracker
from ncrobust.training.objectives import objective_step
from ncrobust.training.schedule import piecewise_lr
from ncrobust.views import FIT_VIEW, OUTPUT_LAYER


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
    quiet: bool = False  # no per-epoch line on the terminal (log.txt still gets it)
    writer: Any = None
    tracker: Tracker = field(default_factory=Tracker)  # MLflow with tracking: mlflow (rank 0)
    state: str = "new"  # how the session started: new, replace, resume or restart (runs.claim)
    claim: Claim | None = None  # the run directory's lock (rank 0), held for the session's life
    identity: dict[str, Any] = field(default_factory=dict)
    saved_epoch: int = -1  # the epoch of the newest checkpoint on disk
    context: distributed.Context = field(default_factory=distributed.Context)
    parallel: torch.nn.Module | None = None  # DistributedDataParallel to train through
    compiled: torch.nn.Module | None = None  # the model through torch.compile (--compile)
    compiled_parallel: torch.nn.Module | None = None  # the DDP wrapper through torch.compile

    @property
    def trained(self) -> torch.nn.Module:
        """The module the training loss is computed through (DDP under torchrun, compiled
        with --compile)."""
        if self.parallel is not None:
            return self.parallel if self.compiled_parallel is None else self.compiled_parallel
        return self.model if self.compiled is None else self.compiled

    @property
    def attacker(self) -> torch.nn.Module:
        """The module the training attack runs through (no DDP: its gradients stay local)."""
        return self.model if self.compiled is None else self.compiled


def prepare(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    quiet: bool = False,
) -> Session:
    """Check the configuration, lock the output directory, load data and model, and restore
    the checkpoint of a resumed run; on any failure, nothing is written or changed.

    Under ``torchrun`` rank 0 alone locks and inspects the directory and tells the others how
    the run starts.
    """
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    config = validate(config)
    check_fault_plan()  # a bad NCROBUST_FAULT is refused before the directory is claimed
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
    check_tracking(config.tracking, installed=True)
    claim = None
    if context.is_main:
        claim = claim_run(Path(config.out), resume=resume, overwrite=overwrite, checkpoint=LAST)
    try:
        session = _load(config, context, device, claim)
    except BaseException:
        if claim is not None:
            claim.abandon()
        raise
    if progress is None:
        progress = sys.stderr.isatty()
    session.progress = progress and session.context.is_main and not quiet
    session.quiet = quiet
    return session


def _load(
    config: TrainConfig, context: distributed.Context, device: torch.device, claim: Claim | None
) -> Session:
    """Data, model and optimizer of ``config``; a resumed run's checkpoint verified and loaded."""
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
    # every rank has checked everything above before the process group forms
    context, device = distributed.setup(config.device)
    state = distributed.share(claim.state if claim is not None else None)
    parallel = distributed.wrap(model, device, config.sync_bn)  # SyncBN first: same parameters
    optimizer = make_sgd(
        model.parameters(),
        device,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    compiled = compiled_parallel = None
    if compile_wanted(config.compile, device):  # the same modules and parameters, compiled
        compiled = Compiled(model)
        compiled_parallel = None if parallel is model else Compiled(parallel)
    run = RunDirectory(Path(config.out))
    identity = run_identity(config, dataset)
    start_epoch = 0
    if state == "resume":
        identity["run_id"] = run.run_id()
        chosen = _resume_point(config, run, identity) if context.is_main else None
        path = distributed.share(chosen)  # every rank resumes from rank 0's choice
        checkpoint = load_checkpoint(path)
        checkpoint.check_identity(identity)
        restore(checkpoint, model, optimizer)
        start_epoch = checkpoint.epoch
        if context.is_main:
            _verify_kept(config, run, start_epoch, path)
            if path.name != LAST:
                run.log(f"{LAST} is missing: resuming from the kept checkpoint {path.name}")
    distributed.barrier()
    return Session(
        config,
        run,
        device,
        dataset.to(device),
        model,
        optimizer,
        layers,
        final_layers,
        start_epoch,
        False,
        state=state,
        claim=claim,
        identity=identity,
        saved_epoch=start_epoch if state == "resume" else -1,
        context=context,
        parallel=None if parallel is model else parallel,
        compiled=compiled,
        compiled_parallel=compiled_parallel,
    )


def _resume_point(config: TrainConfig, run: RunDirectory, identity: dict[str, Any]) -> Path:
    """The checkpoint a resume continues from: ``last``, or without it the newest kept
    checkpoint that belongs to this run and whose epoch the tables reach; else a UsageError
    naming the checkpoints there are."""
    last = run.checkpoint_dir / LAST
    if last.is_file():
        _check_resumable(load_checkpoint(last), config, run, identity)
        return last
    kept = kept_checkpoints(run.checkpoint_dir, "all")[::-1]
    problems = []
    for path in kept:
        try:
            _check_resumable(load_checkpoint(path), config, run, identity)
        except UsageError as exc:
            problems.append(str(exc))
            continue
        return path
    raise UsageError(
        f"cannot resume {run.root}: {LAST} is missing and none of the kept checkpoints "
        f"({', '.join(p.name for p in kept)}) fits: {problems[0]}"
    )


def _check_resumable(
    checkpoint: Checkpoint, config: TrainConfig, run: RunDirectory, identity: dict[str, Any]
) -> None:
    """Refuse a checkpoint of another run, of an epoch outside the run, or whose tables lost
    or gained rows since it was written."""
    checkpoint.check_epoch(config.epochs)
    checkpoint.check_identity(identity)
    rows = checkpoint.metadata.get("rows")
    run.check_tables(checkpoint.epoch, rows if isinstance(rows, dict) else None)


def _verify_kept(config: TrainConfig, run: RunDirectory, upto: int, source: Path) -> None:
    """Check the kept checkpoints a resume builds on; re-link the one a kill cut off."""
    for epoch in kept_epochs(config, upto):
        path = run.checkpoint_dir / epoch_name(epoch)
        if not path.exists():
            if epoch == upto:  # killed between the rolling checkpoint and its kept copy
                run.record(path)
                atomic_copy(source, path)
            else:
                run.log(f"warning: kept checkpoint {path} is missing (deleted?)")
            continue
        kept = load_checkpoint(path)
        if kept.epoch != epoch:
            raise UsageError(f"checkpoint {path} holds epoch {kept.epoch}, not {epoch}")


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    stop_after: int | None = None,
    quiet: bool = False,
) -> RunDirectory:
    """Train (or continue) the run of ``config`` and return its directory.

    The terminal gets one summary line per epoch; ``progress`` adds tqdm bars for the batches
    and the measurement (default: when stderr is a terminal), ``quiet`` prints neither.

    The run directory is locked for the whole session. A resumed run without a checkpoint
    (killed during start-up) starts again from scratch, which gives the same result.
    ``stop_after`` ends the session after that epoch as an interruption would (tests use it).
    Under ``torchrun`` every process calls this; only rank 0 writes the run directory.
    """
    joined = distributed.current().distributed  # a process group that the caller owns
    config = validate(config)
    try:
        with determinism(config.deterministic, resolve_device(config.device)):
            run = _train(config, resume, overwrite, progress, stop_after, quiet)
    except BaseException:
        if not joined:
            distributed.shutdown()
        raise
    if not joined:
        distributed.shutdown(wait=True)
    return run


def _train(
    config: TrainConfig,
    resume: bool,
    overwrite: bool,
    progress: bool | None,
    stop_after: int | None,
    quiet: bool = False,
) -> RunDirectory:
    session = prepare(config, resume=resume, overwrite=overwrite, progress=progress, quiet=quiet)
    run, main = session.run, session.context.is_main
    try:
        _start(session)
        config = session.config
        if config.tensorboard and main:
            from torch.utils.tensorboard import SummaryWriter

            before = set(run.tensorboard_dir.glob("*"))
            session.writer = SummaryWriter(str(run.tensorboard_dir))
            run.record(*(set(run.tensorboard_dir.glob("*")) - before))
            session.writer.add_text("config", _config_table(config))
        if main:
            session.tracker = open_tracker(config.tracking, config.tracking_dir, run.root)
            session.tracker.start(config.to_dict())
        if session.state != "resume":
            rows, stats = measure(session, 0, None)
            if main:
                run.append(rows, stats)
                _save(session, 0)
                _scalars(session, 0, rows)
        for epoch in range(session.start_epoch + 1, config.epochs + 1):
            _epoch(session, epoch)
            if stop_after is not None and epoch >= stop_after and epoch < config.epochs:
                return run
        if main:
            run.mark_done(config.epochs)
            session.tracker.log_artifacts(
                [run.config_path, run.log_path, run.metrics_path, run.stats_path]
            )
            session.tracker.finish()
    except KeyboardInterrupt as exc:
        signal_name = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        when = (
            f"after epoch {session.saved_epoch}" if session.saved_epoch >= 0 else "during start-up"
        )
        message = f"{signal_name} {when}" + _resumable(session)
        _log_quietly(session, f"interrupted: {message}")
        _finish_quietly(session, "KILLED")
        raise type(exc)(message) from None
    except DiskFull as exc:
        message = f"{exc}" + _resumable(session)
        _log_quietly(session, f"stopped: {message}")
        _finish_quietly(session, "FAILED")
        raise DiskFull(message, exc.path, exc.needed) from None
    except TrainingDiverged as exc:
        _log_quietly(session, f"stopped: {exc}")
        _finish_quietly(session, "FAILED")
        raise
    finally:
        if session.writer is not None:
            session.writer.close()
        if session.claim is not None:
            session.claim.release()
    return run


def _start(session: Session) -> None:
    """Set up the directory for the session (rank 0): fresh files for a new run, tidy for a
    resume; ``config.yaml`` records the number of processes the run executes on now."""
    run, world = session.run, session.context.world_size
    ranks = distributed.describe_ranks(session.device)  # every rank takes part
    recorded = session.config.world_size
    config = session.config = dataclasses.replace(session.config, world_size=world)
    if not session.context.is_main:
        return
    run.remove_temporaries()
    if session.state == "resume":
        run.truncate_after(session.start_epoch)
        run.log(f"resumed at epoch {session.start_epoch} with {world} process(es): {ranks}")
        if recorded != world:
            run.log(f"world_size {recorded} -> {world}")
            run.write_config(config)
        return
    kept = kept_epochs(config, config.epochs)
    planned = run.planned(run.checkpoint_dir / epoch_name(e) for e in kept)
    if session.state == "restart":
        run.clear(keep=("config.yaml", "log.txt"))
        session.identity["run_id"] = run.begin(fresh=False, planned=planned)
        run.log("no checkpoint was written yet: starting again from epoch 0")
        if recorded != world:
            run.write_config(config)
    else:
        if session.state == "replace":
            run.clear()
        session.identity["run_id"] = run.begin(fresh=True, planned=planned)
        run.write_config(config)
    run.log(f"run {run.root} on {session.device}: {_describe(config)}")
    if world > 1:
        sync = "synchronised" if config.sync_bn else "per-process"
        run.log(f"{world} processes, {sync} BatchNorm: {ranks}")


def _resumable(session: Session) -> str:
    if session.saved_epoch < 0 and not session.run.config_path.is_file():
        return "; nothing of the run was written: run the same command again"
    if session.saved_epoch < 0:
        return f"; ncrobust train --resume {session.run.root} starts it again"
    return (
        f"; the tables up to epoch {session.saved_epoch} and its checkpoint are kept: "
        f"ncrobust train --resume {session.run.root} continues"
    )


def _log_quietly(session: Session, line: str) -> None:
    """Log a stop message (rank 0); a log that cannot be written (a full disk) must not hide it.

    Before ``config.yaml`` exists the directory is not a run yet and stays free of logs.
    """
    run = session.run
    if session.context.is_main and run.config_path.is_file():
        with contextlib.suppress(OSError, DiskFull):
            run.log(line)


def _finish_quietly(session: Session, status: str) -> None:
    """Close the tracked run of a stopped session; a tracking store that fails must not hide
    the reason the run stopped."""
    with contextlib.suppress(Exception):
        session.tracker.finish(status)


def _config_table(config: TrainConfig) -> str:
    """The config as a markdown table (TensorBoard's text tab renders it)."""
    lines = ["| field | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in config.to_dict().items()]
    return "\n".join(lines)


def resume_config(out: str | Path, device: str | None = None) -> TrainConfig:
    """The stored config of the run in ``out`` (optionally on another device)."""
    if not str(out).strip():
        raise UsageError("--resume needs a run directory, got an empty path")
    path = Path(out) / "config.yaml"
    if not path.is_file():
        raise UsageError(f"cannot resume: {out} holds no run (no config.yaml)")
    config = read_config(path)
    config.out = str(out)
    if device is not None:
        config.device = device
    return config


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
        shards = (_rows(n, config.batch_size, i, rank, world) for i in range(total))
        mine = sum(stop - start for start, stop, _ in shards)
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
                    trained,
                    x,
                    y,
                    config,
                    attack,
                    keep_adv,
                    attack_model=session.attacker,
                    rows=rows,
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
    spec = ProbeSpec.for_threat(
        config,
        plan,
        layers,
        batch_size=config.measure_batch_size,
        cache_bytes=config.feature_cache_mb << 20,
        seed=config.seed,
        accuracy_only=[pair for pair in always if pair not in plan],
        radii=config.view_radii(),
    )
    model = session.model
    if not config.sync_bn:
        distributed.broadcast_buffers(model)  # every rank measures rank 0's BN statistics
    prober = Prober.for_classifier(
        model,
        spec,
        session.dataset.num_classes,
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
    last = run.checkpoint_dir / LAST
    kept = run.checkpoint_dir / epoch_name(epoch)
    run.record(last, *([kept] if is_kept(config, epoch) else []))
    extra = {"rows": run.row_counts()}  # what the tables held: a resume checks them
    save_checkpoint(
        last, session.model, session.optimizer, epoch, extra=extra, identity=session.identity
    )
    session.saved_epoch = epoch
    if is_kept(config, epoch):
        atomic_copy(last, kept)


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
    if session.progress:
        from tqdm import tqdm

        tqdm.write(line)  # above the bars, which are erased when they finish
    elif not session.quiet:
        print(line, flush=True)
    _scalars(session, epoch, rows)


def _scalars(session: Session, epoch: int, rows: list[dict[str, Any]]) -> None:
    """The rows to the tracker and as TensorBoard scalars, tagged split/view/layer/metric."""
    session.tracker.log_rows(epoch, rows)
    if session.writer is not None:
        for row in rows:
            tag = f"{row['split']}/{row['view']}/{row['layer']}/{row['metric']}"
            session.writer.add_scalar(tag, row["value"], epoch)


def _progress(iterable: Any, session: Session, total: int, desc: str) -> Iterator[Any]:
    if not session.progress:
        return iter(iterable)
    from tqdm import tqdm

    return iter(tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True))
