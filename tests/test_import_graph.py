"""Import hygiene of the first-party packages: the layer table of docs/LAYOUT.md, checked.

Why these checks exist: import cycles between our own modules only "work" while every first-party
import is hidden inside a function, which hides the dependency structure and turns a refactor into a
run-time `ImportError` far from its cause; and a folder that imports upward stops saying what it is. So,
per source folder (a failure names the folder and file):

* no cycle in the graph of first-party imports (deferred ones included: hiding an edge in a
  function does not remove the cycle), between files and between folders (`LAYERS` nodes);
* every import goes down the layer table `LAYERS` (or stays inside its folder); the command-line
  modules (`*/cli.py`) and the demo form the top layer `entry`, whatever folder holds them;
* first-party imports only at module level (not inside a function, method or class body), apart from
  `ALLOWED_DEFERRED` below;
* no underscore-prefixed name imported from another first-party module (make it public or move it),
  and no training-private name imported from anywhere outside `training/` (tests and experiments too);
* experiment scripts import only public API: names listed in the target module's `__all__`.

Only the standard library is used (`ast`, `tomllib`), so the test reads the source without importing
it. Folders and their import names come from pyproject's `package-dir`, so a new folder (e.g. `search/`
= `mtgfe.search`) is checked as soon as it is declared there. `if TYPE_CHECKING:` imports never run, so
they count for neither the graph nor the top-level rule; neither do imports under
`if __name__ == "__main__":` (script entry points, e.g. train.py delegating to cli.py).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]

# (file relative to the repository root, imported module): first-party imports that may stay deferred.
# Keep it empty or tiny, each entry with its reason. Not seen by this AST check, on purpose and documented
# where they live: `importlib` look-ups by name in `mtgfe.utils.entrypoints` (console scripts must set
# OMP_WAIT_POLICY before the module holding `main` imports torch).
ALLOWED_DEFERRED: dict[tuple[str, str], str] = {}

# Folder -> layer (docs/LAYOUT.md). A module may import modules of its own folder and of lower layers only;
# equal layers do not import each other. `entry` is the command lines and the demo, in whichever folder.
LAYERS = {
    "utils": 0,          # torch-free helpers (I/O, validation, console-script launcher)
    "processing": 1,     # image decoding, image processor, tokenizer, MTGFEProcessor (Hub remote code)
    "modeling_mtgfe": 2,  # configs, models, losses, pipeline + scoring core (Hub remote code); registration
    "data": 3,           # benchmark registry and annotations, split loading, synthetic scenes, image views
    "search": 3,         # gallery index, scenes, reports: an application of the model, needs no dataset code
    "hub_cards": 4,      # model/dataset cards, publishing, benchmark card facts
    "evaluation": 5,     # metrics, retrieval evaluation, CV summary, the compositional benchmark
    "training": 6,       # config, trainer, checkpointing, collate, perturbation
    "entry": 7,          # */cli.py and training/demo.py: argument parsing and printing only
}
ENTRY_FILES = ("training/demo.py",)  # entry modules not named cli.py

def package_dirs() -> dict[str, str]:
    """`{folder: import name}` from pyproject's `[tool.setuptools] package-dir`."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mapping = data["tool"]["setuptools"]["package-dir"]
    return {folder: name for name, folder in mapping.items()}


@dataclass(frozen=True)
class Import:
    module: str  # importing module
    file: str  # its path relative to ROOT
    target: str  # first-party module imported (a submodule when `from pkg import submodule`)
    names: tuple[str, ...]  # names taken with `from target import ...`
    line: int
    nested: bool  # inside a function, method or class body
    type_only: bool  # inside `if TYPE_CHECKING:`


def _modules() -> dict[str, tuple[Path, str]]:
    """`{module name: (file, folder)}` of every first-party source file."""
    found = {}
    for folder, name in package_dirs().items():
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([name, *parts])] = (path, folder)
    return found


MODULES = _modules()
FIRST_PARTY_ROOTS = tuple(sorted({name.split(".")[0] for name in package_dirs().values()}))


def _is_first_party(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in package_dirs().values()) or name in MODULES


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_main_guard(node: ast.AST) -> bool:
    """`if __name__ == "__main__":` runs only as a script, never on import: no edge of the import graph."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    left, right = node.test.left, node.test.comparators
    return isinstance(left, ast.Name) and left.id == "__name__" and len(right) == 1 and \
        isinstance(right[0], ast.Constant) and right[0].value == "__main__"


def _walk(node: ast.AST, nested: bool, type_only: bool) -> Iterator[tuple[ast.AST, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        if _is_main_guard(child):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, nested, type_only
        child_nested = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
        child_type_only = type_only or (isinstance(child, ast.If) and _is_type_checking(child))
        yield from _walk(child, child_nested, child_type_only)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports_of(module: str) -> list[Import]:
    path, _ = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = str(path.relative_to(ROOT))
    is_package = path.name == "__init__.py"
    found = []
    for node, nested, type_only in _walk(tree, False, False):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_first_party(alias.name):
                    target = alias.name if alias.name in MODULES else alias.name.rpartition(".")[0]
                    found.append(Import(module, rel, target, (), node.lineno, nested, type_only))
            continue
        base = _resolve(module, is_package, node)
        if not _is_first_party(base):
            continue
        plain = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in MODULES:  # `from pkg import submodule`: an edge to the submodule itself
                found.append(Import(module, rel, sub, (), node.lineno, nested, type_only))
            else:
                plain.append(alias.name)
        if plain or not node.names:
            found.append(Import(module, rel, base, tuple(plain), node.lineno, nested, type_only))
    return found


ALL_IMPORTS = {module: imports_of(module) for module in MODULES}


def find_cycles(imports: dict[str, list[Import]]) -> list[list[str]]:
    """Cycles found by DFS over the module-level edges (each reported once, starting at its least name)."""
    graph = {m: sorted({i.target for i in imps if not i.type_only and i.target in imports and i.target != m})
             for m, imps in imports.items()}
    cycles, seen = [], set()

    def visit(node: str, stack: list[str], on_stack: set[str], done: set[str]) -> None:
        for nxt in graph[node]:
            if nxt in on_stack:
                cycle = stack[stack.index(nxt):]
                start = cycle.index(min(cycle))
                key = tuple(cycle[start:] + cycle[:start])
                if key not in seen:
                    seen.add(key)
                    cycles.append(list(key))
            elif nxt not in done:
                stack.append(nxt)
                on_stack.add(nxt)
                visit(nxt, stack, on_stack, done)
                on_stack.discard(nxt)
                stack.pop()
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start], {start}, done)
    return cycles


CYCLES = find_cycles(ALL_IMPORTS)


def node_of(module: str) -> str:
    """The layer-table node of a module: `entry` for command lines and the demo, else its folder."""
    path, folder = MODULES[module]
    rel = str(path.relative_to(ROOT))
    return "entry" if path.name == "cli.py" or rel in ENTRY_FILES else folder


def folder_edges(imports: dict[str, list[Import]]) -> dict[tuple[str, str], list[Import]]:
    """`{(node, node): imports}` between different layer-table nodes (type-only imports left out)."""
    edges: dict[tuple[str, str], list[Import]] = {}
    for module, imps in imports.items():
        for i in imps:
            if i.type_only or i.target not in MODULES:
                continue
            a, b = node_of(module), node_of(i.target)
            if a != b:
                edges.setdefault((a, b), []).append(i)
    return edges


FOLDER_EDGES = folder_edges(ALL_IMPORTS)


def _folder_params():
    return [pytest.param(folder, id=folder) for folder in package_dirs()]


def _in_folder(module: str, folder: str) -> bool:
    return MODULES[module][1] == folder


@pytest.mark.parametrize("folder", _folder_params())
def test_no_import_cycles(folder):
    bad = [" -> ".join([*cycle, cycle[0]]) for cycle in CYCLES if any(_in_folder(m, folder) for m in cycle)]
    assert not bad, f"import cycles through {folder}/:\n" + "\n".join(bad)


@pytest.mark.parametrize("folder", _folder_params())
def test_first_party_imports_at_module_top(folder):
    bad = [f"{i.file}:{i.line}: import of {i.target} inside a function/class"
           for module, imps in ALL_IMPORTS.items() if _in_folder(module, folder)
           for i in imps if i.nested and not i.type_only and (i.file, i.target) not in ALLOWED_DEFERRED]
    assert not bad, f"deferred first-party imports in {folder}/ (move them to the module top):\n" + "\n".join(bad)


@pytest.mark.parametrize("folder", _folder_params())
def test_no_private_names_across_modules(folder):
    bad = [f"{i.file}:{i.line}: from {i.target} import {name}"
           for module, imps in ALL_IMPORTS.items() if _in_folder(module, folder)
           for i in imps if i.target != module
           for name in i.names if name.startswith("_") and not name.startswith("__")]
    assert not bad, f"private names imported across modules in {folder}/:\n" + "\n".join(bad)


def test_checker_sees_every_folder():
    """The checks above are only as good as the module list: every declared folder contributes files."""
    folders = {folder for _, folder in MODULES.values()}
    assert folders == set(package_dirs()), set(package_dirs()) - folders
    assert any(m.startswith("mtgfe.training.") for m in MODULES)


def test_checker_finds_a_cycle():
    """Self-test on a synthetic graph: the DFS reports a two-module cycle, and nothing for a chain."""
    def edge(a, b):
        return Import(a, a, b, (), 1, False, False)

    assert find_cycles({"p.x": [edge("p.x", "p.y")], "p.y": [edge("p.y", "p.x")]}) == [["p.x", "p.y"]]
    assert find_cycles({"p.x": [edge("p.x", "p.y")], "p.y": [edge("p.y", "p.z")], "p.z": []}) == []


def test_layer_table_covers_every_folder():
    assert set(LAYERS) == set(package_dirs()) | {"entry"}, set(package_dirs()) ^ (set(LAYERS) - {"entry"})


@pytest.mark.parametrize("folder", _folder_params())
def test_imports_go_down_the_layers(folder):
    bad = [f"{i.file}:{i.line}: {a} (layer {LAYERS[a]}) imports {i.target} of {b} (layer {LAYERS[b]})"
           for (a, b), imps in FOLDER_EDGES.items() for i in imps
           if MODULES[i.module][1] == folder and LAYERS[b] >= LAYERS[a]]
    assert not bad, f"imports that do not go down the layer table from {folder}/:\n" + "\n".join(bad)


def test_no_folder_level_cycles():
    folder_imports = {node: [Import(node, node, b, (), 0, False, False) for (a, b) in FOLDER_EDGES if a == node]
                      for node in LAYERS}
    cycles = find_cycles(folder_imports)
    assert not cycles, "folder-level import cycles: " + "; ".join(" -> ".join([*c, c[0]]) for c in cycles)


def _source_files_outside_packages() -> list[Path]:
    """Tests and experiment scripts: they import the package but are not part of it."""
    return sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "experiments").rglob("*.py")])


def _from_imports(path: Path) -> Iterator[tuple[int, str, str]]:
    """`(line, module, name)` of every absolute `from first_party import name` in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module and _is_first_party(node.module):
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def test_no_training_private_names_outside_training():
    """`training/` keeps its internals: nothing outside it, tests and experiments included, imports them."""
    bad = []
    for module, imps in ALL_IMPORTS.items():
        if MODULES[module][1] != "training":
            bad += [f"{i.file}:{i.line}: from {i.target} import {n}" for i in imps
                    if i.target.startswith("mtgfe.training") for n in i.names if n.startswith("_")]
    for path in _source_files_outside_packages():
        bad += [f"{path.relative_to(ROOT)}:{line}: from {module} import {name}"
                for line, module, name in _from_imports(path)
                if module.startswith("mtgfe.training") and name.startswith("_")]
    assert not bad, "training-private names imported outside training/:\n" + "\n".join(bad)


def _public_names(module: str) -> set[str] | None:
    """The module's `__all__` (a literal list/tuple), or None when it declares none."""
    path, _ = MODULES[module]
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return None


def test_experiment_scripts_use_public_api_only():
    """Experiments import public names only: listed in the module's `__all__` where it declares one, else
    without a leading underscore (or a submodule). A refactor of the package may change anything else, and
    a study that reached into internals would silently stop reproducing."""
    bad = []
    for path in sorted((ROOT / "experiments").rglob("*.py")):
        for line, module, name in _from_imports(path):
            if f"{module}.{name}" in MODULES:
                continue
            if module not in MODULES:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {module} is not a module of the package")
                continue
            public = _public_names(module)
            if (name not in public) if public is not None else name.startswith("_"):
                bad.append(f"{path.relative_to(ROOT)}:{line}: from {module} import {name} (not in its __all__)")
    assert not bad, "experiment scripts importing non-public names:\n" + "\n".join(bad)
