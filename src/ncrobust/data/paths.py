"""Where downloaded datasets and their decoded caches live, and whether the network may be used."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "NCROBUST_DATA"
OFFLINE_ENV = "NCROBUST_OFFLINE"


def default_data_dir() -> Path:
    """``$NCROBUST_DATA``, else ``$XDG_CACHE_HOME/ncrobust/data``, else ``~/.cache/ncrobust/data``.

    Resolved at call time, so the environment variables can change between calls.
    """
    configured = os.environ.get(DATA_ENV)
    if configured:
        return Path(configured).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache_home).expanduser() if cache_home else Path.home() / ".cache"
    return base / "ncrobust" / "data"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The explicit ``data_dir`` when given, else :func:`default_data_dir`."""
    if data_dir is None:
        return default_data_dir()
    if not isinstance(data_dir, str | Path) or str(data_dir) == "":
        raise ValueError(f"data_dir must be a non-empty path, got {data_dir!r}")
    return Path(data_dir).expanduser()


def offline() -> bool:
    """True when ``$NCROBUST_OFFLINE`` is set to anything but ``''``, ``0``, ``false`` or ``no``."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")
