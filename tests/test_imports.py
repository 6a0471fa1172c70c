"""The package's import graph: no cycles among aloe's modules, no borrowed private names.

The graph is read from the source with `ast`, without importing anything. An edge A -> B
means module A names module B in an import statement, at module level or inside a
function (a deferred import is still a dependency; deferring it only hides a cycle).
`import aloe.x.y` and `from aloe.x.y import name` point at aloe.x.y (or at aloe.x.y.name
when that is a module); the packages above it, which Python initialises on the way, are
not counted: a package's `__init__` only re-exports. Imports under `if TYPE_CHECKING:`
are excluded: they never run, and type-only references may point upwards.

Private means a leading underscore (dunders aside). A module may not import another
module's private names (`from aloe.x import _y`) nor reach them as attributes
(`aloe.x._y`, `x._y` after `from aloe import x`); a private module (`aloe.pkg._mod`) may be
imported only by the modules of its own package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import aloe

SRC = Path(aloe.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = ["aloe", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except the bodies of `if TYPE_CHECKING:` blocks (their `else` stays)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def absolute(module: str, node: ast.ImportFrom) -> str:
    """The module an ImportFrom names, with relative imports resolved."""
    if not node.level:
        return node.module or ""
    base = package_of(module).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


class Imports(ast.NodeVisitor):
    """One module's edges to aloe modules, and its uses of other modules' private names."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.edges: dict[str, int] = {}  # target module -> first line
        self.private: list[str] = []  # "line N: what"
        self.aliases: dict[str, str] = {}  # local name -> the aloe module it is bound to

    def scan(self, tree: ast.AST) -> Imports:
        nodes = list(runtime_nodes(tree))
        for node in nodes:  # bindings first, so that attribute uses anywhere resolve
            if isinstance(node, ast.Import):
                self.import_(node)
            elif isinstance(node, ast.ImportFrom):
                self.import_from(node)
        for node in nodes:
            if isinstance(node, ast.Attribute):
                self.attribute(node)
        return self

    def edge(self, target: str, line: int) -> None:
        if target in MODULES and target != self.module:
            self.edges.setdefault(target, line)
            self.check_private_module(target, line)

    def check_private_module(self, target: str, line: int) -> None:
        parts = target.split(".")
        for i, part in enumerate(parts):
            owner = ".".join(parts[:i])  # the package the private module belongs to
            if is_private(part) and not self.module.startswith(owner + "."):
                self.private.append(f"line {line}: imports private module {target}")

    def import_(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] != "aloe":
                continue
            self.edge(alias.name, node.lineno)
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                self.aliases["aloe"] = "aloe"

    def import_from(self, node: ast.ImportFrom) -> None:
        source = absolute(self.module, node)
        if source.split(".")[0] != "aloe":
            return
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            if sub in MODULES:  # `from aloe.x import y` where y is a module
                self.edge(sub, node.lineno)
                self.aliases[alias.asname or alias.name] = sub
                continue
            self.edge(source, node.lineno)
            if is_private(alias.name) and source != self.module:
                self.private.append(f"line {node.lineno}: from {source} import {alias.name}")

    def attribute(self, node: ast.Attribute) -> None:
        """`m._y` where m names an aloe module (also through `aloe.x.m._y`)."""
        chain, value = [node.attr], node.value
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            value = value.value
        if not isinstance(value, ast.Name) or value.id not in self.aliases:
            return
        module = self.aliases[value.id]
        for name in chain:
            if f"{module}.{name}" in MODULES:
                module = f"{module}.{name}"
                continue
            if is_private(name) and module != self.module:
                self.private.append(f"line {node.lineno}: uses {module}.{name}")
            return


SCANS = {m: Imports(m).scan(ast.parse(p.read_text(), str(p))) for m, p in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each given
    as one concrete cycle through its first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [cycle_through(graph, set(c), c[0]) for c in components]


def cycle_through(graph: dict[str, set[str]], component: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside the component (breadth first)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in parent:
                    parent[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{start} is on no cycle")


def test_the_scan_sees_the_package() -> None:
    assert {"aloe.train", "aloe.data", "aloe.datasets.sampler", "aloe.algos.dagger"} <= set(MODULES)
    assert "aloe.data" in SCANS["aloe.datasets.sampler"].edges


def test_no_import_cycle() -> None:
    graph = {m: set(s.edges) for m, s in SCANS.items()}
    found = cycles(graph)
    lines = []
    for cycle in found:
        pairs = zip(cycle, cycle[1:], strict=False)
        hops = [f"{a} -> {b} (line {SCANS[a].edges[b]})" for a, b in pairs]
        lines.append("cycle: " + "; ".join(hops))
    assert not found, "import cycles among aloe's modules:\n" + "\n".join(lines)


def test_no_private_name_crosses_a_module() -> None:
    found = [f"{m}: {what}" for m, s in SCANS.items() for what in s.private]
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_the_checks_catch_what_they_should() -> None:
    code = (
        "from typing import TYPE_CHECKING\n"
        "import aloe.train as t\n"
        "from aloe.collect import _Recorder, collect\n"
        "if TYPE_CHECKING:\n"
        "    from aloe.run import Run\n"
        "def f():\n"
        "    from aloe import data\n"
        "    return data._hidden, t._learner, data.STATE\n"
    )
    scan = Imports("aloe.algos.dagger").scan(ast.parse(code))
    assert set(scan.edges) == {"aloe.train", "aloe.collect", "aloe.data"}
    assert sorted(p.split(": ", 1)[1] for p in scan.private) == [
        "from aloe.collect import _Recorder",
        "uses aloe.data._hidden",
        "uses aloe.train._learner",
    ]
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
