"""No import cycle: every module of the package imports alone, in any order, and the module-level import graph is a DAG.

An import cycle held together by import order (the old ``merging`` <-> ``adamerging`` pair) works until someone
imports the "wrong" module first. Two checks:

- dynamic: a fresh interpreter imports each module as the first module of the package (the package is dropped from
  ``sys.modules`` before each; third-party modules stay loaded, which keeps it fast), forwards, backwards and in a
  shuffled order;
- static: the graph of module-level ``import``/``from`` statements between the package's modules (function-level
  imports are deliberate lazy imports and are skipped) has no cycle, so no order can break.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "concrete_subspace"


def module_names() -> list[str]:
    """Every module of the package, by dotted name (packages as their own name; ``__main__`` scripts left out)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = set(module_names())


def resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
    """The package modules an import statement of ``module`` loads (``from . import x`` counts ``pkg.x``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("concrete_subspace")]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("concrete_subspace"):
        return []
    submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return submodules or [target]


def import_graph() -> dict[str, set[str]]:
    names = set(module_names())
    graph = {}
    for name in names:
        path = ROOT / Path(*name.split("."))
        is_package = path.is_dir()
        tree = ast.parse((path / "__init__.py" if is_package else path.with_suffix(".py")).read_text())
        edges = set()
        for node in tree.body:  # module level only (also inside top-level if/try)
            for inner in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    edges.update(
                        t
                        for t in resolve(name, inner, is_package)
                        if t in names and not (name + ".").startswith(t + ".")
                    )  # a package's __init__ runs first anyway
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_module_level_imports_form_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_primitives_never_import_the_registry_or_methods():
    graph = import_graph()
    methods = {
        "concrete_subspace.registry",
        "concrete_subspace.adamerging",
        "concrete_subspace.concrete",
        "concrete_subspace.baselines",
    }
    for primitive in ("merging", "masks", "task_vectors", "problem", "functional", "loop"):
        name = f"concrete_subspace.{primitive}"
        assert not graph[name] & methods, f"{name} imports {graph[name] & methods}"


IMPORT_EACH_ALONE = """
import importlib, json, random, sys, traceback
names = json.loads(sys.argv[1])
orders = [names, names[::-1], random.Random(0).sample(names, len(names))]
failures = []
for order in orders:
    for name in order:
        for loaded in [m for m in sys.modules if m == "concrete_subspace" or m.startswith("concrete_subspace.")]:
            del sys.modules[loaded]
        try:
            importlib.import_module(name)
        except Exception:
            failures.append(name + ": " + traceback.format_exc(limit=3))
print(json.dumps(sorted(set(failures))))
"""


def test_every_module_imports_alone_in_a_fresh_interpreter():
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_ALONE, json.dumps(module_names())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(failures)
