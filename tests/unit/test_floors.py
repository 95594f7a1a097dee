"""The package's floors: no module imports from a floor above its own, and no two packages import each other.

``FLOORS`` is the one written order of the package (ARCHITECTURE.md's "recipes -> tasks ->
distill -> convert -> nnet", with every other package placed), bottom first. A module may
import from its own package and from any package on a lower floor; packages that share a
floor do not import each other. Every import counts, those inside functions included: a lazy
import is still a dependency. A new package (or top-level module) joins a floor here, and
the test names the import that breaks the order.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

PACKAGE = "speechbrain_cald"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

FLOORS: Tuple[Tuple[str, ...], ...] = (
    ("files", "safe_load"),  # writing files atomically, loading weights without code
    ("pretrained",),  # where a local pretrained model (or a bundled one) lives
    ("nnet", "data"),  # layers that know no model family; corpora, tokens, batching
    # teacher -> student surgery; CTC decoding with an LM; tiny corpora and models written on the
    # spot (the test suite, dry runs, bench.gpu_recipe)
    ("convert", "decoders", "testing"),
    ("lobes", "distill"),  # assembled models; taps, losses, guides, DistillBrain
    ("options_record", "overrides"),  # a run's options: the command line read, the output folder's record of them
    ("experiment",),  # one run's folder, lock and options
    ("bench",),  # speed and memory of what the floors below build
    ("tasks",),  # heads, objectives and each task's Brain
    ("inference",),  # an exported model loaded and run
    ("evaluation",),  # stage 4: metrics computed twice, RESULTS.md
)
FLOOR: Dict[str, int] = {unit: level for level, units in enumerate(FLOORS) for unit in units}

Edge = Tuple[str, str, str, int]  # (importing unit, imported unit, file, line)


def unit_of(path: Path, root: Path = ROOT) -> str:
    """The subpackage (or top-level module) a file belongs to: ``nnet/mamba.py`` -> ``nnet``."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else parts[0][: -len(".py")]


def module_name(path: Path, root: Path = ROOT) -> str:
    """``speechbrain_cald/nnet/mamba.py`` -> ``speechbrain_cald.nnet.mamba`` (a package: its name)."""
    parts = (PACKAGE,) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(tree: ast.AST, path: Path, root: Path = ROOT) -> Iterator[Tuple[str, int]]:
    """Every absolute module name ``tree`` imports (relative imports resolved), with its line."""
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, node.lineno
            for alias in node.names:  # `from speechbrain_cald import nnet` imports a package
                yield f"{module}.{alias.name}", node.lineno


def package_edges(root: Path = ROOT) -> List[Edge]:
    """Every import from one unit of the package into another."""
    edges = []
    for path in sorted(root.rglob("*.py")):
        source = unit_of(path, root)
        for name, line in imported_names(ast.parse(path.read_text(encoding="utf-8")), path, root):
            parts = name.split(".")
            if parts[0] != PACKAGE or len(parts) < 2 or not _is_unit(parts[1], root):
                continue
            if parts[1] != source:
                edges.append((source, parts[1], str(path.relative_to(root.parent)), line))
    return sorted(set(edges))  # `from pkg.tasks import ctc` names tasks twice


def _is_unit(name: str, root: Path) -> bool:
    return (root / name).is_dir() or (root / f"{name}.py").is_file()


def units(root: Path = ROOT) -> Set[str]:
    """The subpackages and top-level modules of the package (``__init__`` aside)."""
    found = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    found |= {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    return found


def upward(edges: List[Edge]) -> List[Edge]:
    """The imports into a floor that is not below the importer's (same floor, other package: too)."""
    return [e for e in edges if e[0] in FLOOR and e[1] in FLOOR and FLOOR[e[1]] >= FLOOR[e[0]]]


def cycles(edges: List[Edge]) -> List[List[str]]:
    """Groups of packages that reach each other through imports (strongly connected, size > 1)."""
    graph: Dict[str, Set[str]] = {}
    for a, b, *_ in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    groups: List[List[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the package graph is a dozen nodes deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def _lines(edges: List[Edge]) -> str:
    return "\n".join(f"  {f}:{line}: {a} (floor {FLOOR.get(a)}) imports {b} (floor {FLOOR.get(b)})"
                     for a, b, f, line in edges)


def test_every_package_has_a_floor():
    missing = sorted(units() - set(FLOOR))
    assert not missing, f"{missing}: no floor in tests/unit/test_floors.py FLOORS; add each where its imports allow"
    gone = sorted(set(FLOOR) - units())
    assert not gone, f"FLOORS names {gone}, which {PACKAGE}/ no longer holds"


def test_no_import_runs_up_a_floor():
    bad = upward(package_edges())
    assert not bad, (
        "imports into a floor that is not below the importer's (move the code down, or the importer up):\n"
        + _lines(bad)
    )


def test_no_import_cycle_between_packages():
    found = cycles(package_edges())
    assert not found, f"packages that import each other: {found}"


def test_the_package_never_imports_recipes_or_tests():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        for name, line in imported_names(ast.parse(path.read_text(encoding="utf-8")), path):
            if name.split(".")[0] in ("recipes", "tests"):
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {name}")
    assert not bad, "the library imports recipe or test code:\n  " + "\n  ".join(bad)


# ---- the checks themselves catch what they claim to, on a throwaway package


def _package(tmp: Path, files: Dict[str, str]) -> Path:
    for rel, text in {"__init__.py": "", **files}.items():
        path = tmp / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp / PACKAGE


def test_a_lazy_upward_import_is_found(tmp_path):
    root = _package(tmp_path, {
        "nnet/__init__.py": "",
        "nnet/layer.py": "def f():\n    from speechbrain_cald.tasks import ctc  # lazy\n",
        "tasks/__init__.py": "",
        "tasks/ctc.py": "from speechbrain_cald.nnet import layer\n",
    })
    bad = upward(package_edges(root))
    assert [(a, b, line) for a, b, _, line in bad] == [("nnet", "tasks", 2)]


def test_relative_and_from_package_imports_are_resolved(tmp_path):
    root = _package(tmp_path, {
        "data/__init__.py": "from ..convert import io\n",
        "convert/__init__.py": "",
        "convert/io.py": "from speechbrain_cald import data\nfrom . import io\n",
    })
    edges = {(a, b) for a, b, *_ in package_edges(root)}
    assert edges == {("data", "convert"), ("convert", "data")}
    assert cycles(package_edges(root)) == [["convert", "data"]]
    same_floor = upward([("convert", "decoders", "x.py", 1)])
    assert same_floor, "a package importing another of its floor is refused too"
