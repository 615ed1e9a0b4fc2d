"""The package's import graph, read with ``ast`` (module-level and function-level imports): no cycle, and
imports only go downward, layer by layer, where a layer is a folder of ``nanodlm/``.

LAYERS lists the folders from the bottom up: a module may import its own folder and the folders below it,
never one above. The modules directly in ``nanodlm/`` (the CLI, ``nanodlm sample``, the public API) stand on
top of every folder. A new module joins its layer by where it is saved; a new folder must be placed in LAYERS.
"""

from __future__ import annotations

import ast
import functools
import re
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nanodlm"
# bottom to top; README's "Layout" section lists the same folders in the same order
LAYERS = ("core", "model", "diffusion", "data", "runs", "training", "sampling", "evaluation", "web", "bench")
TOP = "nanodlm"  # the layer of the modules directly in nanodlm/: above every folder
DATA_FOLDERS = ("configs",)  # presets: Python files read by path (``nanodlm train cpu``), never imported
# the dispatcher imports a command only when it runs (``nanodlm --help`` stays fast); nothing else may
# import package modules inside functions (optional third-party packages may: matplotlib, transformers, ...)
LAZY_OK = {"cli"}


def module_names(package: Path = PACKAGE) -> dict[str, Path]:
    """'model.model' -> nanodlm/model/model.py, 'bench' -> nanodlm/bench/__init__.py, 'cli' -> nanodlm/cli.py."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts == ("__init__",) or parts[0] in DATA_FOLDERS:
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def layer_of(name: str, package: Path = PACKAGE) -> str:
    """The layer a module stands in: its folder, or TOP for a module directly in the package."""
    head = name.split(".")[0]
    return head if (package / head).is_dir() else TOP


def rank(layer: str) -> int:
    return len(LAYERS) if layer == TOP else LAYERS.index(layer)


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
            if not (target == "nanodlm" or target.startswith("nanodlm.") or node_is_relative(node)):
                continue  # a third-party module whose name happens to match one of ours (``data``, ``model``)
            target = target.removeprefix("nanodlm.")
            while target and target not in known:  # nanodlm.x.y -> the module x.y, else its package x
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, _in_function(node, parents)))
    return found


def node_is_relative(node: ast.AST) -> bool:
    return isinstance(node, ast.ImportFrom) and node.level > 0


def read_graph(package: Path) -> dict[str, list[tuple[str, bool]]]:
    mods = module_names(package)
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


@functools.cache
def import_graph() -> dict[str, list[tuple[str, bool]]]:
    return read_graph(PACKAGE)


def upward_imports(package: Path = PACKAGE) -> list[str]:
    """Every import of a module from a higher layer, as 'importer (layer) imports imported (layer)'."""
    out = []
    graph = import_graph() if package == PACKAGE else read_graph(package)
    for name, imported in graph.items():
        mine = layer_of(name, package)
        for target in sorted({m for m, _ in imported}):
            theirs = layer_of(target, package)
            if rank(theirs) > rank(mine):
                out.append(f"{name} ({mine}) imports {target} ({theirs})")
    return out


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
    assert {"model.model", "diffusion.tidar", "sampling.samplers", "training.train", "runs.checkpoint"} <= set(graph)
    assert ("model.model", False) in graph["runs.checkpoint"] and ("core.fileio", False) in graph["data.dataset"]
    own_folder = {("model.attention", False), ("model.config", False), ("model.subtokens", False)}
    assert set(graph["model.model"]) == own_folder  # torch, and its own folder
    assert not graph["model.attention"] and not graph["core.errors"] and not graph["model.subtokens"]
    assert layer_of("cli") == TOP and layer_of("bench.quality") == "bench" and layer_of("web.serve") == "web"
    # the cycle finder finds a planted cycle
    assert find_cycles({"a": [("b", False)], "b": [("c", True)], "c": [("a", False)], "d": []}) == [["a", "b", "c"]]


def test_every_folder_is_a_layer() -> None:
    folders = sorted(p.name for p in PACKAGE.iterdir()
                     if p.is_dir() and p.name not in DATA_FOLDERS and any(p.rglob("*.py")))
    assert folders == sorted(LAYERS), "place each folder of nanodlm/ in LAYERS (bottom to top)"
    assert all((PACKAGE / layer / "__init__.py").is_file() for layer in LAYERS)


def test_no_import_cycle() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_imports_only_go_down() -> None:
    up = upward_imports()
    assert not up, "a layer imports a layer above it:\n" + "\n".join(up)


@pytest.mark.parametrize("name", sorted(module_names()))
def test_package_modules_are_imported_at_the_top(name: str) -> None:
    if name not in LAZY_OK:
        lazy = sorted({m for m, inside in import_graph()[name] if inside})
        assert not lazy, f"{name} imports {lazy} inside a function: import package modules at the top"


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    """A copy of the package with one bad module planted low: the check names it, and only it."""
    copy = tmp_path / "nanodlm"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert upward_imports(copy) == []
    (copy / "core" / "bad.py").write_text("from ..training.config import TrainConfig\n")
    (copy / "model" / "worse.py").write_text("import nanodlm.web.serve\n\nfrom . import model\n")
    assert upward_imports(copy) == ["core.bad (core) imports training.config (training)",
                                    "model.worse (model) imports web.serve (web)"]


def test_readme_layout_names_every_layer_in_order() -> None:
    """README's "Layout" tree: one line a folder of the package, bottom layer first, as LAYERS (+ the presets)."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    tree = readme.split("\n## Layout\n", 1)[1].split("```\n", 2)[1]
    listed = [m.group(1) for m in re.finditer(r"^  (\w+)/ ", tree, re.M)]
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert sorted(listed) == folders, "README's layout tree and nanodlm/'s folders differ"
    assert [name for name in listed if name in LAYERS] == list(LAYERS), "README lists the layers out of order"
