"""Tiny archives in the official CIFAR and ImageNette formats, built inside tmp_path."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ncrobust.data.sources import SOURCES


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


@dataclass
class FakeCifar:
    """A fake CIFAR archive plus the arrays it holds."""

    name: str
    archive: Path
    train_images: np.ndarray  # uint8 [N, 3, 32, 32]
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    file_md5: dict[str, str]


def build_cifar(name: str, where: Path, rng: np.random.Generator) -> FakeCifar:
    """Write ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` with a few images each."""
    source = SOURCES[name]
    if name == "cifar10":
        num_classes, label_key, names_key, meta = 10, b"labels", b"label_names", "batches.meta"
        train_files, test_files = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
        per_file = 4
    else:
        num_classes, label_key, names_key, meta = 100, b"fine_labels", b"fine_label_names", "meta"
        train_files, test_files, per_file = ["train"], ["test"], 12
    class_names = [f"class{c:03d}" for c in range(num_classes)]
    payloads: dict[str, bytes] = {}
    parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
        "train": ([], []),
        "test": ([], []),
    }
    for split, files in (("train", train_files), ("test", test_files)):
        for file in files:
            data = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
            labels = rng.integers(0, num_classes, size=per_file)
            batch = {b"data": data, label_key: [int(v) for v in labels], b"batch_label": b"x"}
            if name == "cifar100":
                batch[b"coarse_labels"] = [int(v) // 5 for v in labels]
            payloads[file] = pickle.dumps(batch)
            parts[split][0].append(data.reshape(-1, 3, 32, 32))
            parts[split][1].append(labels.astype(np.int64))
    payloads[meta] = pickle.dumps({names_key: [n.encode() for n in class_names]})
    archive = where / source.filename
    where.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for file, payload in payloads.items():
            _add_bytes(tar, f"{source.folder}/{file}", payload)
    file_md5 = {file: hashlib.md5(payload).hexdigest() for file, payload in payloads.items()}
    return FakeCifar(
        name,
        archive,
        np.concatenate(parts["train"][0]),
        np.concatenate(parts["train"][1]),
        np.concatenate(parts["test"][0]),
        np.concatenate(parts["test"][1]),
        class_names,
        file_md5,
    )


def register_fake(
    monkeypatch: pytest.MonkeyPatch, name: str, archive: Path, **extra: object
) -> None:
    """Point SOURCES[name] at a locally built archive and its md5 (the real table is restored)."""
    fake = dataclasses.replace(SOURCES[name], md5=md5_of(archive), **extra)  # type: ignore[arg-type]
    monkeypatch.setitem(SOURCES, name, fake)


@pytest.fixture
def cifar_builder() -> Callable[[str, Path, np.random.Generator], FakeCifar]:
    """The archive builder, for tests that place archives themselves."""
    return build_cifar


@pytest.fixture
def register_source(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``register_source(name, archive, **fields)``: SOURCES[name] with the archive's md5."""
    return functools.partial(register_fake, monkeypatch)


@pytest.fixture
def http_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on the loopback interface: (folder, base URL)."""
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    folder = tmp_path / "remote"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCifar:
    fake = build_cifar("cifar10", tmp_path / "data", np.random.default_rng(10))
    register_fake(monkeypatch, "cifar10", fake.archive, file_md5=fake.file_md5)
    return fake


@pytest.fixture
def fake_cifar100(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCifar:
    fake = build_cifar("cifar100", tmp_path / "data", np.random.default_rng(100))
    register_fake(monkeypatch, "cifar100", fake.archive, file_md5=fake.file_md5)
    return fake


# ImageNette-style tree: (class folder, file name, (width, height), format)
IMAGENETTE_FILES = [
    ("n03000684", "b.png", (160, 160), "PNG"),
    ("n03000684", "a.png", (213, 160), "PNG"),
    ("n01440764", "z.png", (160, 239), "PNG"),
    ("n01440764", "c.JPEG", (240, 160), "JPEG"),
    ("n02102040", "d.png", (200, 300), "PNG"),
]
IMAGENETTE_VAL = [
    ("n01440764", "v1.png", (170, 160), "PNG"),
    ("n02102040", "v2.JPEG", (160, 200), "JPEG"),
    ("n03000684", "v3.png", (120, 200), "PNG"),  # shorter side below 160: resized first
]


def pattern_image(width: int, height: int, seed: int) -> np.ndarray:
    """An RGB image whose pixels are distinct enough to pin down a crop position."""
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    red = (rows + seed) % 256
    green = (cols * 3 + seed) % 256
    blue = (rows * 7 + cols * 11) % 256
    return np.stack([red + 0 * cols, green + 0 * rows, blue], axis=-1).astype(np.uint8)


def build_imagenette_tree(root: Path) -> dict[str, np.ndarray]:
    """Write ``root/imagenette2-160/{train,val}/<wnid>/...``; returns the pixels of each PNG."""
    pixels: dict[str, np.ndarray] = {}
    for part, files in (("train", IMAGENETTE_FILES), ("val", IMAGENETTE_VAL)):
        for index, (wnid, file, (width, height), kind) in enumerate(files):
            folder = root / "imagenette2-160" / part / wnid
            folder.mkdir(parents=True, exist_ok=True)
            array = pattern_image(width, height, seed=index * 17)
            Image.fromarray(array).save(folder / file, format=kind)
            pixels[f"{part}/{wnid}/{file}"] = array
    return pixels


@pytest.fixture
def imagenette_tree() -> Callable[[Path], dict[str, np.ndarray]]:
    """The tree builder: ``imagenette_tree(root)`` writes ``root/imagenette2-160/...``."""
    return build_imagenette_tree
