"""``ncrobust train``: flags generated from :class:`~ncrobust.config.TrainConfig`'s fields."""

from __future__ import annotations

import argparse
from typing import Any

from ncrobust.commands.common import add_terminal_arguments
from ncrobust.config import (
    CONFIG_FIELDS,
    EXECUTION_FIELDS,
    PIXEL_FIELDS,
    TrainConfig,
    available_presets,
    build_config,
)
from ncrobust.errors import UsageError
from ncrobust.views import format_pixels

HELP: dict[str, str] = {
    "dataset": "cifar10 | cifar100 | imagenette | digits | synthetic",
    "data_dir": "dataset directory; empty: $NCROBUST_DATA or the user cache",
    "augment": "random crop + flip on the device (the paper: off)",
    "model": "vgg11_bn | preact_resnet18 | small_cnn",
    "mode": "st | at | trades",
    "norm": "linf | l2",
    "eps": "attack radius in [0,1] pixel units; a number or k/255",
    "alpha": "PGD step in [0,1] pixel units; a number or k/255",
    "steps": "PGD iterations",
    "trades_beta": "TRADES regularisation weight",
    "trades_bn_eval": "keep BN in eval mode for the whole TRADES run (the released code)",
    "epochs": "training epochs",
    "lr": "initial learning rate",
    "lr_milestones": "fractions of the run where lr drops, comma-separated",
    "lr_gamma": "lr factor at each milestone",
    "batch_size": "training batch size",
    "weight_decay": "SGD weight decay (all parameters)",
    "momentum": "SGD momentum",
    "seed": "random seed",
    "device": "auto | cpu | cuda | cuda:N",
    "precision": "fp32 | bf16 (bf16 autocast on CUDA)",
    "channels_last": "NHWC memory format on CUDA",
    "compile": "torch.compile the training step and its attack (--no-compile: eager; default: "
    "on for CUDA, off on the CPU; falls back to eager where compilation fails)",
    "deterministic": "deterministic algorithms, cuDNN autotuning off, cuBLAS's fixed workspace: "
    "a resumed CUDA run is bitwise the uninterrupted one",
    "measure_every": "measure NC every k epochs (plus epoch 0 and the last)",
    "measure_batch_size": "batch size of measurement passes",
    "views": "clean,pgd,train_adv,gaussian,targeted,ncc_adaptive or all (all but "
    "ncc_adaptive, which attacks each layer's NCC rule: one PGD per layer); VIEW@split limits "
    "a view to a split, VIEW@eps=E gives pgd/targeted/ncc_adaptive a radius of their own "
    "(step scaled linearly); empty: the mode's default",
    "splits": "train,test",
    "layers": "tap names, comma-separated, or all",
    "final_layers": "layers measured at the last epoch (empty: --layers); all for layerwise",
    "gaussian_std": "std of the Gaussian view in [0,1] pixel units; a number or k/255",
    "feature_cache_mb": "cache features between NC passes up to this size",
    "out": "run directory; empty: runs/<dataset>_<model>_<mode>_<norm>_eps<k>_seed<s>",
    "checkpoint_every": "keep a checkpoint every k epochs (0: only the last)",
    "tensorboard": "also write TensorBoard scalars and the config (RUN/tensorboard)",
    "tracking": "mlflow: log the config, every metric row and the run's files to MLflow "
    "(pip install 'ncrobust[track]'); empty: off",
    "tracking_dir": "MLflow store, a path or URI; empty: $MLFLOW_TRACKING_URI or ./mlruns",
    "sync_bn": "under torchrun, BN statistics of the global batch (--no-sync-bn: per process)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ncrobust train``: one per config field, plus file, preset and run control."""
    parser.add_argument("--config", metavar="YAML", help="config file (a mapping of fields)")
    presets = ", ".join(available_presets())  # an unknown one is refused in one line
    parser.add_argument("--preset", metavar="NAME", help=f"a paper setting ({presets})")
    parser.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    add_terminal_arguments(parser)
    defaults = TrainConfig()
    group = parser.add_argument_group("configuration (flags override --config and --preset)")
    for name in CONFIG_FIELDS:
        if name in EXECUTION_FIELDS:
            continue  # recorded from the launch, not chosen
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        help_text = f"{HELP.get(name, '')} (default: {_show(name, default)})"
        if isinstance(default, bool) or name == "compile":  # compile: auto unless given
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            group.add_argument(flag, dest=name, metavar=name.upper(), default=None, help=help_text)


def _show(name: str, value: Any) -> str:
    """A field's default as one would type it (radii as k/255)."""
    if isinstance(value, list):
        return ",".join(map(str, value)) or "empty"
    if name in PIXEL_FIELDS and isinstance(value, float):
        return format_pixels(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return "empty" if value in ("", None) else str(value)


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, bool]:
    """The resolved config of the parsed flags and whether this is a resume."""
    overrides = {
        name: getattr(args, name)
        for name in CONFIG_FIELDS
        if name not in EXECUTION_FIELDS and getattr(args, name) is not None
    }
    if args.resume is not None:  # an empty DIR (an unset shell variable) is refused, not ignored
        from ncrobust.training.trainer import resume_config

        extra = sorted(set(overrides) - {"device"})
        if extra or args.config or args.preset:
            given = ", ".join("--" + n.replace("_", "-") for n in extra) or "--config/--preset"
            raise UsageError(
                f"--resume continues a run with its own config.yaml; {given} cannot change it"
            )
        return resume_config(args.resume, overrides.get("device")), True
    return build_config(args.preset, args.config, overrides), False


def run(args: argparse.Namespace) -> int:
    """Validate everything, then train; exit 2 on bad input before anything is written."""
    from ncrobust import distributed
    from ncrobust.training.trainer import train

    context = distributed.launch_context()
    try:
        config, resume = config_from_args(args)
        run_dir = train(
            config,
            resume=resume,
            overwrite=args.overwrite,
            progress=args.progress,
            quiet=args.quiet,
        )
    except Exception as exc:
        if not context.distributed:
            raise
        return _rank_failed(context, exc)
    if context.is_main:
        print(f"run directory: {run_dir.root}")
    return 0


def _rank_failed(context: Any, exc: Exception) -> int:
    """Under torchrun: one line naming this rank and the cause, and the exit status.

    A non-finite loss is seen by every rank at once (the sums are all-reduced), so only rank 0
    reports it; a failed collective means another rank died first (the launcher names it).
    """
    import sys

    import torch.distributed as dist

    from ncrobust.errors import TrainingDiverged

    where = f"ncrobust train: rank {context.rank} of {context.world_size}"
    if isinstance(exc, TrainingDiverged):
        if context.is_main:
            print(f"{where}: stopped: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, ValueError):
        print(f"{where}: error: {exc}", file=sys.stderr)
        return 2
    # NCCL raises DistError when a peer is gone; gloo a RuntimeError from its transport
    if isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and "gloo" in str(exc)):
        text = str(exc).strip()
        first = text.splitlines()[0][:300] if text else type(exc).__name__
        print(
            f"{where}: stopped: lost contact with another process of the job ({first})",
            file=sys.stderr,
        )
        return 1
    raise exc
