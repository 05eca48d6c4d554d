"""The Python examples of the README's "Analysis" section run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def _examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Analysis\n", 1)[1].split("\n## ", 1)[0]
    # blocks marked <!-- skip: ... --> need what this machine lacks (a finished demo, a GPU)
    return re.findall(r"(?<!-->\n)```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_the_three_examples() -> None:
    examples = _examples()
    assert len(examples) >= 3
    joined = "\n".join(examples)
    assert "Conv1d" in joined and "resnet18" in joined and '"logits"' in joined


@pytest.mark.parametrize("index", range(4))
def test_each_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    for library in ("torchvision", "timm"):
        if f"import {library}" in _examples()[index] or f"from {library}" in _examples()[index]:
            pytest.importorskip(library)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    namespace: dict[str, object] = {}
    try:
        exec(compile(_examples()[index], f"README example {index}", "exec"), namespace)
    finally:
        torch.set_num_threads(before)
    tables = [v for v in namespace.values() if isinstance(v, pd.DataFrame)]
    metrics = next(t for t in tables if "metric" in t.columns)
    assert {"accuracy", "nc1"} <= set(metrics.metric)
    assert set(metrics.view) >= {"clean", "pgd"}
