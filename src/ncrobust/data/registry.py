"""``load_dataset``: one entry point from a dataset name to an :class:`ImageDataset`."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from ncrobust.data.containers import ImageDataset
from ncrobust.data.paths import resolve_data_dir
from ncrobust.data.synthetic import synthetic_dataset
from ncrobust.errors import UsageError

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "imagenette", "digits", "synthetic")


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    **options: Any,
) -> ImageDataset:
    """Load dataset ``name`` as uint8 CPU tensors (move it with ``.to(device)``).

    The paper's datasets are read from ``data_dir`` (default :func:`default_data_dir`),
    downloaded and md5-checked when missing and ``download`` is on, decoded once and cached
    there. ``digits`` is bundled with scikit-learn; ``synthetic`` takes the keyword options of
    :func:`synthetic_dataset`.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in DATASETS:
        raise UsageError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    if key == "synthetic":
        accepted = list(inspect.signature(synthetic_dataset).parameters)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise UsageError(
                f"unknown option(s) {unknown} for synthetic (accepted: {', '.join(accepted)})"
            )
        return synthetic_dataset(**options)
    if options:
        raise UsageError(f"dataset {key!r} takes no options, got {sorted(options)}")
    if key == "digits":
        from ncrobust.data.digits import load_digits_dataset

        return load_digits_dataset()
    root = resolve_data_dir(data_dir)
    if key == "imagenette":
        from ncrobust.data.imagenette import load_imagenette

        return load_imagenette(root, download)
    from ncrobust.data.cifar import load_cifar

    return load_cifar(key, root, download)
