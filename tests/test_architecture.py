"""The architecture stays as docs/architecture.md describes it: imports form a DAG, files and
functions stay small, and every path the document names exists."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "segproto"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """module -> the segproto modules it imports anywhere in its file (function-level imports
    included), each with the packages above it: importing ``a.b.c`` runs ``a/__init__`` and
    ``a/b/__init__`` too."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names]
            for target in targets:
                if not target.startswith("segproto"):
                    continue
                while target not in files and "." in target:
                    target = target.rsplit(".", 1)[0]
                parts = target.split(".")
                for i in range(1, len(parts) + 1):  # the target and every package above it
                    dep = ".".join(parts[:i])
                    if dep in files and dep != name and not name.startswith(dep + "."):
                        deps.add(dep)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_imports_form_a_dag():
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_files_and_functions_are_small():
    problems = []
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_FILE_LINES:
            problems.append(f"{path.relative_to(REPO)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert not problems, "\n".join(problems)


def test_every_module_says_what_it_holds():
    missing = [str(p.relative_to(REPO)) for p in sorted(PKG.rglob("*.py"))
               if ast.get_docstring(ast.parse(p.read_text())) is None]
    assert not missing, missing


def test_architecture_doc_names_only_existing_files():
    doc = (REPO / "docs" / "architecture.md").read_text()
    names = set(re.findall(r"`((?:segproto|csrc|tests|benchmarks|docs|configs|search|scripts)/[\w./<>{}*-]*)`", doc))
    assert len(names) > 20
    missing = [n for n in sorted(names) if not any(c in n for c in "<>{}*") and not (REPO / n).exists()]
    assert not missing, missing
