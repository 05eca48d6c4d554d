"""The evaluation tests' tiny models run on one intra-op thread (the probing tests' fixture)."""

from __future__ import annotations

from ..probing.conftest import one_thread  # noqa: F401 - the autouse fixture
