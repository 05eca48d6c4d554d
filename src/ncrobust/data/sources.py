"""Where the paper's datasets come from: official URL, archive name and md5 of each.

The values are the ones torchvision's dataset classes use (CIFAR10, CIFAR100, Imagenette
160px). ``SOURCES`` is the one table the loaders read, so a test can point an entry at a
locally built archive without weakening the check for the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ArchiveSource:
    """One downloadable archive: where it lives, its md5 and the folder it extracts to.

    ``file_md5`` maps files inside the extracted folder to their md5 where the publisher gives
    them (CIFAR), so an already-extracted folder can be verified without its archive.
    """

    title: str
    url: str
    filename: str
    md5: str
    folder: str
    file_md5: dict[str, str] = field(default_factory=dict)


SOURCES: dict[str, ArchiveSource] = {
    "cifar10": ArchiveSource(
        title="CIFAR-10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        filename="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        file_md5={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
    ),
    "cifar100": ArchiveSource(
        title="CIFAR-100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        filename="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        file_md5={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
    ),
    "imagenette": ArchiveSource(
        title="ImageNette (160 px)",
        url="https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
        filename="imagenette2-160.tgz",
        md5="e793b78cc4c9e9a4ccc0c1155377a412",
        folder="imagenette2-160",
    ),
}
