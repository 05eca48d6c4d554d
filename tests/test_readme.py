"""The README is executable truth: every ```python block runs as written, and the numbers it
states about the tool agree with the tool.

A block that cannot run here is marked in the README by an HTML comment on the line before it:
``<!-- skip: REASON -->`` (e.g. it needs CUDA, the network or a finished demo) or
``<!-- needs: MODULE -->`` (skipped when that optional module is not installed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(
    r"(?:<!--\s*(?P<kind>skip|needs):\s*(?P<what>[^>]*?)\s*-->\s*\n)?```python\n(?P<code>.*?)```",
    re.S,
)


@dataclass(frozen=True)
class Block:
    line: int
    code: str
    kind: str | None
    what: str | None


def blocks() -> list[Block]:
    """The README's python blocks with their line numbers and markers."""
    text = README.read_text(encoding="utf-8")
    return [
        Block(text.count("\n", 0, m.start("code")), m["code"], m["kind"], m["what"])
        for m in BLOCK.finditer(text)
    ]


def _analysis_lines() -> range:
    """The README lines of the "Analysis" section."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Analysis\n")
    end = text.index("\n## ", start + 1)
    return range(text.count("\n", 0, start), text.count("\n", 0, end))


ANALYSIS_LINES = _analysis_lines()


def test_the_readme_has_python_blocks() -> None:
    assert len(blocks()) >= 5


@pytest.mark.parametrize("block", blocks(), ids=lambda b: f"README.md:{b.line}")
def test_python_block_runs_as_written(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if block.kind == "skip":
        pytest.skip(str(block.what))
    if block.line in ANALYSIS_LINES:
        pytest.skip("run, with checks of its tables, by tests/study/test_readme_analysis.py")
    if block.kind == "needs":
        pytest.importorskip(str(block.what))
    monkeypatch.chdir(tmp_path)
    code = compile("\n" * block.line + block.code, str(README), "exec")  # tracebacks: README lines
    exec(code, {"__name__": "__readme__"})


def test_the_paper_grid_has_the_runs_the_readme_states(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ncrobust.cli import main

    stated = re.findall(r"# (\d+) runs, one array", README.read_text(encoding="utf-8"))
    assert main(["sweep", "--grid", "paper", "--root", str(tmp_path / "p"), "--dry-run"]) == 0
    counted = re.search(r"^(\d+) runs, ", capsys.readouterr().out, re.M)
    assert counted is not None and stated == [counted.group(1)]
