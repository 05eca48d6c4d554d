"""The tiny zoo entries of the offline tests, importable by name in a job's own process (the
zoo's registry there does not know them until :func:`register` adds them)."""

from __future__ import annotations

import torch

from ncrobust.zoo import catalog
from ncrobust.zoo.job import ZooJob

NAMES = ["TinyZooA", "TinyZooB", "TinyZooC"]


def tiny() -> torch.nn.Module:
    """The zoo's WideResNet, one block per group."""
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    return WideResNet(depth=10, widen_factor=1)


def registry() -> dict[str, dict[str, object]]:
    """The zoo's cifar10/Linf registry of model names."""
    utils = catalog.require_robustbench()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return utils.all_models[BenchmarkDataset.cifar_10][ThreatModel.Linf]  # type: ignore[no-any-return]


class TinyZooJob(ZooJob):
    """The zoo job, run where the tiny entries are registered first."""

    def __call__(self) -> str:
        for name in NAMES:
            registry()[name] = {"model": tiny, "gdrive_id": "offline"}
        return super().__call__()
