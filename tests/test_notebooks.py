"""Notebook checks: parameters cells match the config dataclasses; every notebook runs at smoke size and passes nbval.

The execution test builds (or reuses) the smoke zoo, executes each notebook with papermill into a temporary
folder (figures and run cache there too, never in the repository), checks that each wrote its results JSON and
figures, then re-runs the executed copies under nbval (``--nbval-lax``: cells marked ``# NBVAL_CHECK_OUTPUT``
are compared, after tests/nbval_sanitize.cfg; every cell must run without error).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import nbformat
import pytest

from concrete_subspace.experiments import CONFIGS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# Shorter sweeps for CI (every code path still runs; `make figures SMOKE=True` runs the full lists).
CI_PARAMETERS = {"02_flan_t5_glue": {"seeds": [0, 1], "ta_scalings": [0.0, 0.3, 1.0]},
                 "04_robustness": {"corruptions": ["gaussian_noise", "jpeg_compression"]},
                 "07_ablations": {"temperatures": [0.5, 1.0], "scalings": [0.3], "ta_scalings": [0.0, 0.3, 1.0],
                                  "task_counts": [4, 8]}}


def parameters_cell(path: Path) -> nbformat.NotebookNode:
    """The single code cell tagged 'parameters' (an error if there is none or several)."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one 'parameters' cell, found {len(cells)}"
    return cells[0]


def assigned_names(source: str) -> list[str]:
    """Names assigned at top level of a cell, in order."""
    return [t.id for node in ast.parse(source).body if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name)]


def test_every_config_has_a_notebook_and_back():
    on_disk = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    assert on_disk == set(CONFIGS), f"notebooks {sorted(on_disk)} vs configs {sorted(CONFIGS)}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parameters_cell_is_exactly_the_config(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    names = assigned_names(parameters_cell(path).source)
    expected = [f.name for f in fields(CONFIGS[name])]
    assert names == expected, f"{name}: parameters {names} != fields of {CONFIGS[name].__name__} {expected}"
    for required in ("scale", "device", "seed", "tasks", "steps", "smoke"):
        assert required in names


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_notebooks_are_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{name}: cells {dirty} carry outputs; regenerate with `make notebooks`"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every notebook executed by papermill at smoke size into a temporary folder."""
    import papermill

    from concrete_subspace.experiments import ensure_zoo

    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)
    ensure_zoo(seed=0, smoke=True, progress=False)
    tmp = tmp_path_factory.mktemp("notebooks")
    figures, cache = tmp / "figures", tmp / "cache"
    for name in sorted(CONFIGS):
        papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(tmp / f"{name}.ipynb"), kernel_name="python3",
                                   parameters={"scale": "mini", "smoke": True, "figures_dir": str(figures),
                                               "cache_dir": str(cache), **CI_PARAMETERS.get(name, {})},
                                   cwd=str(NOTEBOOKS), progress_bar=False, log_output=False)
    return tmp


@pytest.mark.slow
@pytest.mark.notebooks
def test_notebooks_write_results(executed):
    for name in CONFIGS:
        results = executed / "figures" / "mini-smoke" / name / "results.json"
        assert results.exists(), f"{name} wrote no results JSON"
        payload = json.loads(results.read_text())
        assert payload["config"]["smoke"] is True and payload["seed"] == 0 and payload["versions"]["torch"]
        assert payload["wall_seconds"] >= 0
        assert list(results.parent.glob("*.png")), f"{name} saved no PNG"
        assert list(results.parent.glob("*.pdf")), f"{name} saved no PDF"
        assert list(results.parent.glob("*.csv")) and list(results.parent.glob("*.md"))
        if name == "02_flan_t5_glue":  # at mini scale: the mini-text zoo, with its gates
            assert payload["skipped"] is False and (results.parent / "claims.md").exists()


@pytest.mark.slow
@pytest.mark.notebooks
def test_notebooks_pass_nbval(executed):
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
           "--nbval-sanitize-with", str(SANITIZE), "-o", "addopts=", "--rootdir", str(executed),
           *sorted(str(p) for p in executed.glob("*.ipynb"))]
    proc = subprocess.run(cmd, cwd=executed, env={**os.environ, **OFFLINE}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
