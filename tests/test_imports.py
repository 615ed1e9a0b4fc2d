"""The package's import graph, read with ``ast`` (module-level and function-level imports): no cycle, and
imports only go downward: pure modules <- the rest of the library (generation, checkpoints, data) <- commands.

The layer rule is stated by name lists, so new modules join it without editing this file: a module is a command
if its first name is in COMMANDS (or starts with ``bench``), pure if it is in PURE, a library module otherwise.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nanodlm"
# entry points: they may import anything below them, and nothing below imports them
COMMANDS = {"cli", "__main__", "train", "sample", "judge", "evaluate", "bench", "serve", "demo", "web"}
# the lowest floor: tensors in, tensors out; these import torch and each other only
PURE = {"errors", "fileio", "attention", "model", "diffusion", "diagnostics", "ar_sampling", "samplers", "reveal",
        "blockwise", "textstats", "tidar", "speculative"}
# the dispatcher imports a command only when it runs (``nanodlm --help`` stays fast); nothing else may
# import package modules inside functions (optional third-party packages may: matplotlib, transformers, ...)
LAZY_OK = {"cli"}
# cycles still being untangled elsewhere (issue 9, bench as a subpackage); empty this when they are gone
PENDING_CYCLES: set[str] = set()


def module_names() -> dict[str, Path]:
    """'model' -> nanodlm/model.py, 'bench.quality' -> nanodlm/bench/quality.py, 'bench' -> bench/__init__.py."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts == ("__init__",):
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _in_function(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return True
    return False


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """[(imported nanodlm module, inside a function)] for one module; TYPE_CHECKING imports are left out."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or _in_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:  # relative: from .x import y, from . import x, from ..x import y
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule when there is one
            targets = [f"{mod}.{a.name}".strip(".") for a in node.names]
            targets = [t if t.removeprefix("nanodlm.") in known else mod for t in targets]
        for target in targets:
            target = target.removeprefix("nanodlm.")
            while target and target not in known:  # nanodlm.x.y -> the module x.y, else its package x
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, _in_function(node, parents)))
    return found


@functools.cache
def import_graph() -> dict[str, list[tuple[str, bool]]]:
    mods = module_names()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def is_command(name: str) -> bool:
    top = name.split(".")[0]
    return top in COMMANDS or top.startswith("bench")


def find_cycles(graph: dict[str, list[tuple[str, bool]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_graph_is_read_correctly() -> None:
    graph = import_graph()
    assert {"model", "diffusion", "samplers", "train", "checkpoint"} <= set(graph)
    assert ("model", False) in graph["checkpoint"] and ("fileio", False) in graph["data"]
    assert set(graph["model"]) == {("attention", False)} and not graph["attention"] and not graph["errors"]  # torch
    # the cycle finder finds a planted cycle
    assert find_cycles({"a": [("b", False)], "b": [("c", True)], "c": [("a", False)], "d": []}) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    cycles = [c for c in find_cycles(import_graph()) if not set(c) <= PENDING_CYCLES]
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("name", sorted(module_names()))
def test_imports_only_go_down(name: str) -> None:
    imported = import_graph()[name]
    if not is_command(name):
        up = sorted({m for m, _ in imported if is_command(m)})
        assert not up, f"library module {name} imports the command module(s) {up}"
    if name not in LAZY_OK:
        lazy = sorted({m for m, inside in imported if inside})
        assert not lazy, f"{name} imports {lazy} inside a function: import package modules at the top"
    if name in PURE:
        impure = sorted({m for m, _ in imported if m not in PURE})
        assert not impure, f"pure module {name} imports {impure}; it may import only {sorted(PURE)}"
