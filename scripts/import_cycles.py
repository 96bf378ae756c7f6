"""List the import cycles among srcore's modules, read from the source with :mod:`ast`.

Each import is counted three ways: at module level, inside a function (it runs too, only
later), and under ``if TYPE_CHECKING:`` (no run, but the module's API names the other).
The import-linter contracts in pyproject.toml keep the layers; this prints every strongly
connected group of modules, including a package's ``__init__`` with its own modules.

    .venv/bin/python scripts/import_cycles.py [ROOT] [--edges]
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

KINDS = (
    ("module level only", {"top"}),
    ("with imports inside functions", {"top", "function"}),
    ("with TYPE_CHECKING imports too", {"top", "function", "typing"}),
)


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in (root / "srcore").rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


class _Imports(ast.NodeVisitor):
    def __init__(self, name: str, is_package: bool, known: dict[str, Path]) -> None:
        self.name, self.is_package, self.known = name, is_package, known
        self.depth = self.typing = 0
        self.edges: dict[str, set[str]] = defaultdict(set)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == (
            "TYPE_CHECKING"
        ):
            self.typing += 1
            for child in node.body:
                self.visit(child)
            self.typing -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _add(self, target: str) -> None:
        while target and target not in self.known:
            target = target.rpartition(".")[0]
        if target and target != self.name:
            kind = "typing" if self.typing else "function" if self.depth else "top"
            self.edges[target].add(kind)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == "srcore":
                self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.name.split(".")[: None if self.is_package else -1]
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        if base.split(".")[0] != "srcore":
            return
        for alias in node.names:
            full = f"{base}.{alias.name}"
            self._add(full if full in self.known else base)


def edges(root: Path) -> dict[tuple[str, str], set[str]]:
    known = modules(root)
    out: dict[tuple[str, str], set[str]] = {}
    for name, path in known.items():
        visitor = _Imports(name, path.name == "__init__.py", known)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        for target, kinds in visitor.edges.items():
            out[(name, target)] = kinds
    return out


def cycles(graph: dict[tuple[str, str], set[str]], allowed: set[str]) -> list[list[str]]:
    """The strongly connected groups of two or more modules (Tarjan)."""
    succ: dict[str, set[str]] = defaultdict(set)
    for (a, b), kinds in graph.items():
        if kinds & allowed:
            succ[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted({a for a, _ in graph} | {b for _, b in graph}):
        if v not in index:
            visit(v)
    return sorted(groups, key=len, reverse=True)


def main(argv: list[str]) -> None:
    args = [a for a in argv if not a.startswith("-")]
    graph = edges(Path(args[0]) if args else Path(__file__).resolve().parent.parent)
    for label, allowed in KINDS:
        groups = cycles(graph, allowed)
        print(f"{label}: {len(groups)} cycle(s)")
        for group in groups:
            print(f"  [{len(group)}] {' '.join(group)}")
    if "--edges" in argv:
        for (a, b), kinds in sorted(graph.items()):
            print(f"{a} -> {b} ({', '.join(sorted(kinds))})")


if __name__ == "__main__":
    main(sys.argv[1:])
