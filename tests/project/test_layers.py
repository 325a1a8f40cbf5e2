"""The tree's layers: the core never imports the application, no import cycle, small modules, no hand-written
backward passes and no compiled code.

Imports are read from the source (``ast``), so imports inside functions and under ``TYPE_CHECKING`` count too.
An import of a submodule does not count as an import of its parent packages (Python runs those first anyway).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "rankplug"
CORE = ("rankplug.functional", "rankplug.losses", "rankplug.heads", "rankplug.methods", "rankplug.stages")
APPLICATION = "rankplug.app"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    found.update(
        {f"rankplug.integrations.{p.stem}".removesuffix(".__init__"): p for p in (ROOT / "integrations").glob("*.py")}
    )
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The rankplug modules that ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
            found.update(submodules)
            if len(submodules) < len(node.names):  # some names are attributes of node.module itself
                found.add(node.module)
    return {name for name in found if name in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = _imports(path, modules) - ancestors - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_core_never_imports_the_application():
    graph = _graph()
    core = [name for name in graph if name.startswith(CORE)]
    assert len(core) >= 10
    offending = {name: sorted(m for m in graph[name] if m.startswith(APPLICATION)) for name in core}
    assert {name: found for name, found in offending.items() if found} == {}


def test_no_private_name_crosses_a_module_boundary():
    """``from rankplug.x import _name`` between modules would tie one module to another's internals."""
    crossings = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "integrations").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rankplug"):
                crossings += [
                    f"{path.relative_to(ROOT)}: {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert crossings == []


@pytest.mark.parametrize("folder", ["rankplug", "integrations"])
def test_no_module_over_600_lines(folder):
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in (ROOT / folder).rglob("*.py")
    }
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}


def test_no_hand_written_backward_and_no_compiled_code():
    sources = {
        p: p.read_text(encoding="utf-8") for p in [*PACKAGE.rglob("*.py"), *(ROOT / "integrations").glob("*.py")]
    }
    assert [str(p) for p, text in sources.items() if "autograd.Function" in text] == []
    assert [str(p) for p in PACKAGE.rglob("*") if p.suffix in (".cpp", ".cu", ".c", ".h")] == []
    assert [str(p) for p, text in sources.items() if "cpp_extension" in text] == []
