"""Getting a verified archive onto disk and extracting it, with one clear error when that fails.

Downloads and extractions land under a temporary name in the data directory and are moved
into place with ``os.replace``, so an interrupted run never leaves a half-written archive or
folder where a later run would trust it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from ncrobust.data.paths import DATA_ENV, OFFLINE_ENV, offline
from ncrobust.data.sources import ArchiveSource
from ncrobust.errors import UsageError


def how_to_get(source: ArchiveSource, root: Path) -> str:
    """The sentence telling a user how to put ``source`` in place by hand."""
    return (
        f"Download {source.url} (md5 {source.md5}) and put {source.filename} in {root}/ "
        f"(choose the directory with data_dir or ${DATA_ENV})."
    )


def folder_verified(source: ArchiveSource, folder: Path) -> bool:
    """True when the extracted ``folder`` holds every file of ``source`` with its md5."""
    from torchvision.datasets.utils import check_integrity

    if not folder.is_dir():
        return False
    return all(check_integrity(folder / name, md5) for name, md5 in source.file_md5.items())


def ensure_archive(source: ArchiveSource, root: Path, download: bool) -> Path:
    """Path of the md5-verified archive in ``root``, downloading it when allowed and needed."""
    from torchvision.datasets.utils import check_integrity

    archive = root / source.filename
    present = archive.is_file()
    if present and check_integrity(archive, source.md5):
        return archive
    blocked = None if download and not offline() else _why_no_download(download)
    if blocked is not None:
        if present:
            raise UsageError(
                f"{source.title} archive {archive} is corrupt or incomplete (md5 differs from "
                f"{source.md5}); {blocked}. Delete it, then: " + how_to_get(source, root)
            )
        raise UsageError(
            f"{source.title} not found: expected {archive} "
            f"(or its extracted folder {root / source.folder}/); {blocked}. "
            + how_to_get(source, root)
        )
    _download(source, root)
    return archive


def _why_no_download(download: bool) -> str:
    if not download:
        return "downloading is off (download=False; pass download=True to fetch it)"
    return f"downloading is off (${OFFLINE_ENV} is set; unset it to fetch it)"


def _download(source: ArchiveSource, root: Path) -> None:
    """Download to a temporary name, verify the md5, then move it to its final name."""
    from torchvision.datasets.utils import download_url

    root.mkdir(parents=True, exist_ok=True)
    partial = f".{source.filename}.{os.getpid()}.part"
    try:
        download_url(source.url, str(root), filename=partial, md5=source.md5)
        os.replace(root / partial, root / source.filename)
    except Exception as exc:
        raise UsageError(
            f"could not download {source.title} from {source.url} into {root}: {exc}. "
            + how_to_get(source, root)
        ) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            (root / partial).unlink()


def extract(archive: Path, root: Path, folder: str) -> Path:
    """Extract ``archive`` and move its top-level ``folder`` to ``root/folder`` in one rename."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".extract", dir=root))
    try:
        try:
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, filter="data")  # no absolute paths or links out
                else:  # pragma: no cover - Python without extraction filters
                    tar.extractall(staging)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise UsageError(f"could not extract {archive}: {exc}; delete it and retry") from exc
        extracted = staging / folder
        if not extracted.is_dir():
            raise UsageError(f"{archive} does not contain the folder {folder}/")
        target = root / folder
        if target.exists():  # a stale or damaged copy: move it aside, it is removed below
            os.replace(target, staging / ".replaced")
        os.replace(extracted, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
