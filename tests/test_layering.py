"""The layering rules of docs/architecture (the "never" list), checked on the source of every module.

Imports inside functions count (they run when the function does); imports under `if TYPE_CHECKING:`
do not (they never run). The package root `ragcli` only re-exports lazily, so importing
`ragcli.__version__` from it is not an edge of the module graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ragcli"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node that can run: the tree without the bodies of `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


class Module:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = _module_name(path)
        self.rel = path.relative_to(PACKAGE.parent).as_posix()
        self.tree = ast.parse(path.read_text(encoding="utf-8"))
        self.nodes = list(_runtime_nodes(self.tree))
        self.imports: list[tuple[str, int]] = []  # (imported module or module.name, line)
        self.private_imports: list[tuple[str, int]] = []
        for node in self.nodes:
            if isinstance(node, ast.Import):
                self.imports.extend((a.name, node.lineno) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                self.imports.append((node.module, node.lineno))
                for alias in node.names:
                    self.imports.append((f"{node.module}.{alias.name}", node.lineno))
                    if node.module.startswith("ragcli") and alias.name.startswith("_") and not alias.name.startswith("__"):
                        self.private_imports.append((f"{node.module}.{alias.name}", node.lineno))

    def imported_roots(self) -> set[str]:
        return {name.split(".")[0] for name, _ in self.imports}

    def under(self, *prefixes: str) -> bool:
        return any(self.name == p or self.name.startswith(p + ".") for p in prefixes)


MODULES = [Module(p) for p in sorted(PACKAGE.rglob("*.py"))]
NAMES = {m.name for m in MODULES}


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m.name: set() for m in MODULES}
    for m in MODULES:
        for name, _ in m.imports:
            target = name if name in NAMES else name.rpartition(".")[0]
            if target in NAMES and target not in (m.name, "ragcli"):
                graph[m.name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_imports_inside_functions():
    """The rules below would be toothless if function-level imports were missed."""
    ingest = next(m for m in MODULES if m.name == "ragcli.ingest")
    assert "ragcli.planning" in {name for name, _ in ingest.imports}  # imported inside ingest()


def test_no_import_circle_among_ragcli_modules():
    assert _cycles(_edges()) == []


# (library roots, modules allowed to import them)
ALLOWED = [
    ({"typer", "rich", "click"}, ("ragcli.cli",)),
    ({"fastapi", "uvicorn", "starlette", "sse_starlette"}, ("ragcli.serve",)),
    ({"mlflow"}, ("ragcli.package",)),
    ({"plotly"}, ("ragcli.report",)),
    ({"faiss"}, ("ragcli.store", "ragcli.segments", "ragcli.segmented", "ragcli.targets.local")),
    ({"databricks"}, ("ragcli.targets.databricks", "ragcli.targets.delta_sync")),
]


@pytest.mark.parametrize(("roots", "allowed"), ALLOWED, ids=[sorted(r)[0] for r, _ in ALLOWED])
def test_libraries_stay_in_their_layer(roots, allowed):
    offenders = [f"{m.rel} imports {sorted(m.imported_roots() & roots)}" for m in MODULES
                 if m.imported_roots() & roots and not m.under(*allowed)]
    assert offenders == []


def test_targets_never_import_the_use_cases():
    use_cases = {"ragcli.ingest", "ragcli.planning", "ragcli.retrieval", "ragcli.query", "ragcli.bench",
                 "ragcli.serve", "ragcli.package", "ragcli.cli"}
    offenders = [f"{m.rel}:{line} imports {name}" for m in MODULES if m.under("ragcli.targets")
                 for name, line in m.imports if any(name == u or name.startswith(u + ".") for u in use_cases)]
    assert offenders == []


def _compares_target_name(node: ast.Compare) -> bool:
    sides = [node.left, *node.comparators]
    def names_a_target(s: ast.expr) -> bool:  # settings.target, target.kind, self.target.kind, ...
        if not isinstance(s, ast.Attribute):
            return False
        if s.attr == "target":
            return True
        owner = s.value
        owner_name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
        return s.attr == "kind" and "target" in owner_name.lower()

    named = any(names_a_target(s) for s in sides)
    literal = any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides) or any(
        isinstance(s, (ast.Tuple, ast.List, ast.Set)) and all(isinstance(e, ast.Constant) for e in s.elts) for s in sides)
    return named and literal


def test_no_branch_on_a_target_name_outside_the_factory():
    offenders = [f"{m.rel}:{n.lineno}" for m in MODULES if m.name != "ragcli.targets"
                 for n in m.nodes if isinstance(n, ast.Compare) and _compares_target_name(n)]
    assert offenders == []


def test_no_module_reads_another_modules_private_names():
    offenders = [f"{m.rel}:{line} imports {name}" for m in MODULES for name, line in m.private_imports
                 if name.rpartition(".")[0] != m.name]
    # Attribute access on an imported ragcli module: `import ragcli.x as y` ... `y._secret`.
    for m in MODULES:
        aliases = {}
        for node in m.nodes:
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("ragcli"):
                        aliases[a.asname or a.name.split(".")[0]] = a.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ragcli"):
                for a in node.names:
                    if f"{node.module}.{a.name}" in NAMES:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        for node in m.nodes:
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                offenders.append(f"{m.rel}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    assert offenders == []


def test_library_functions_never_print():
    offenders = [f"{m.rel}:{n.lineno}" for m in MODULES if not m.under("ragcli.cli")
                 for n in m.nodes if isinstance(n, ast.Call) and (
                     (isinstance(n.func, ast.Name) and n.func.id == "print")
                     or (isinstance(n.func, ast.Attribute) and n.func.attr == "write"
                         and isinstance(n.func.value, ast.Attribute) and n.func.value.attr in ("stdout", "stderr")))]
    assert offenders == []
