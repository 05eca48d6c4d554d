"""Datasets as uint8 tensors on the device, and batches taken from them by index.

``load_dataset(name)`` gives an :class:`ImageDataset` for the paper's datasets (``cifar10``,
``cifar100``, ``imagenette``: downloaded, md5-checked and cached under :func:`default_data_dir`),
the embedded default ``digits`` and seeded ``synthetic`` data; :func:`batches` yields float
[0, 1] mini-batches from a split held whole on the device.
"""

from ncrobust.data.batching import batches, num_batches
from ncrobust.data.containers import ImageDataset, Split, channel_stats, is_pixels, to_pixels
from ncrobust.data.paths import default_data_dir
from ncrobust.data.registry import DATASETS, load_dataset
from ncrobust.data.synthetic import synthetic_dataset

__all__ = [
    "DATASETS",
    "ImageDataset",
    "Split",
    "batches",
    "channel_stats",
    "default_data_dir",
    "is_pixels",
    "load_dataset",
    "num_batches",
    "synthetic_dataset",
    "to_pixels",
]
