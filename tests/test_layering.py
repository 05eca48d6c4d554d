"""The package graph: imports point only down, and no package is imported in a circle.

Every ``import``/``from … import`` of ncrobust, at module level or inside a function, counts.
The layers (lowest first) are the architecture of README's "Design" section; packages in one
group of :data:`INDEPENDENT` do not import one another.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "ncrobust"

# lowest first: a package may import packages listed before it (and itself), never after
LAYERS = [
    ["errors"],
    ["runtime", "atomic", "views", "tracking"],
    ["attacks", "data", "models", "collapse"],
    ["distributed"],
    ["config"],
    ["runs"],
    ["probing", "evaluation", "study"],
    ["training"],
    ["experiments", "zoo"],
    ["bench", "commands"],
    ["analysis", "cli", "__main__", "__init__"],
]
# packages of one layer that must not import one another
INDEPENDENT = [
    {"runtime", "atomic", "views", "tracking"},
    {"attacks", "data", "models", "collapse"},
    {"probing", "evaluation", "study"},
    {"bench", "commands"},
    {"experiments", "zoo"},
]
# imports that the layers allow but the design forbids
FORBIDDEN = {"probing": {"config", "training"}}
RANK = {name: index for index, layer in enumerate(LAYERS) for name in layer}


def _package(module: str) -> str:
    """``ncrobust.runs.tables`` -> ``runs``; ``ncrobust`` itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported ncrobust module, line) for every import in the source."""
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                if target == "ncrobust" or target.startswith("ncrobust."):
                    # a name may be a submodule (`from ncrobust.collapse import geometry`)
                    found += [(module, f"{target}.{a.name}", node.lineno) for a in node.names]
            elif isinstance(node, ast.Import):
                found += [
                    (module, a.name, node.lineno)
                    for a in node.names
                    if a.name.startswith("ncrobust.")
                ]
    return found


def test_every_package_has_a_layer() -> None:
    packages = {_package(_module_name(p)) for p in SOURCE.rglob("*.py")}
    assert packages <= set(RANK), f"packages without a layer: {sorted(packages - set(RANK))}"


def test_imports_point_only_down() -> None:
    wrong = []
    for source, target, line in imports():
        a, b = _package(source), _package(target)
        if a == b or target == "ncrobust.__version__":  # the version, not the package
            continue
        if RANK[b] > RANK[a]:
            wrong.append(f"{source}:{line} imports {target} (layer above)")
        elif any({a, b} <= group for group in INDEPENDENT):
            wrong.append(f"{source}:{line} imports {target} (independent packages)")
        elif b in FORBIDDEN.get(a, set()):
            wrong.append(f"{source}:{line} imports {target} (forbidden for {a})")
    assert not wrong, "\n".join(wrong)


def test_no_circle_between_modules() -> None:
    """No module imports itself back through others (imports inside functions count)."""
    known = {_module_name(p) for p in SOURCE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for source, target, _ in imports():
        while target not in known and "." in target:
            target = target.rpartition(".")[0]  # a name imported from a module
        if target != source:
            graph.setdefault(source, set()).add(target)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] if nxt in path else [nxt]
                pytest.fail("import circle: " + " -> ".join([*cycle, nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_no_package_holds_more_than_a_third_of_the_source() -> None:
    lines: dict[str, int] = {}
    for path in SOURCE.rglob("*.py"):
        package = _package(_module_name(path))
        lines[package] = lines.get(package, 0) + len(path.read_text(encoding="utf-8").splitlines())
    total = sum(lines.values())
    largest = max(lines, key=lines.__getitem__)
    assert lines[largest] <= total / 3, f"{largest} holds {lines[largest]} of {total} lines"


def test_measuring_any_model_loads_neither_the_config_nor_the_trainer() -> None:
    code = (
        "import sys, ncrobust.probing.measure; "
        "print(sorted(m for m in sys.modules if m.startswith(('ncrobust.config', "
        "'ncrobust.training', 'ncrobust.experiments', 'ncrobust.study'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
