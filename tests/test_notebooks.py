"""Notebook checks: sources and .ipynb in sync, parameters cells = config dataclasses, one smoke-size run under nbval.

The notebooks' source is ``notebooks/NAME.py`` (jupytext percent format); ``make notebooks`` writes the paired
``.ipynb`` (tests/notebook_pairs.py), and a pair that drifts fails here.

The execution test runs every notebook ONCE, under nbval: each notebook gets its smoke-size parameters injected by
papermill (``prepare_only``: nothing executed), the committed expected outputs of its headline cells (those marked
``# NBVAL_CHECK_OUTPUT``, in tests/expected/notebook_outputs.json) are put into those cells, and nbval executes the
notebook and compares (``--nbval-lax``: only the marked cells; after tests/nbval_sanitize.cfg; every cell must run
without error). Figures, results JSON and the run cache go to a temporary folder, never into the repository.
After a deliberate change of a headline output, record the new expectations with
``python tests/notebook_pairs.py --record DIR`` from notebooks executed at smoke size into DIR.
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
import notebook_pairs
import pytest

from concrete_subspace.experiments import CONFIGS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"
EXPECTED = ROOT / "tests" / "expected" / "notebook_outputs.json"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# Shorter sweeps for CI (every code path still runs; `make figures SMOKE=True` runs the full lists).
CI_PARAMETERS = {
    "02_flan_t5_glue": {"seeds": [0, 1], "ta_scalings": [0.0, 0.3, 1.0]},
    "04_robustness": {"corruptions": ["gaussian_noise", "jpeg_compression"]},
    "07_ablations": {
        "temperatures": [0.5, 1.0],
        "scalings": [0.3],
        "ta_scalings": [0.0, 0.3, 1.0],
        "task_counts": [4, 8],
    },
}


def parameters_cell(path: Path) -> nbformat.NotebookNode:
    """The single code cell tagged 'parameters' (an error if there is none or several)."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one 'parameters' cell, found {len(cells)}"
    return cells[0]


def assigned_names(source: str) -> list[str]:
    """Names assigned at top level of a cell, in order."""
    return [
        t.id
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    ]


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
    for required in ("scale", "device", "zoo_seed", "run_seed", "tasks", "steps", "smoke"):
        assert required in names


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_notebooks_are_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{name}: cells {dirty} carry outputs; regenerate with `make notebooks`"


def test_every_notebook_is_written_from_its_source():
    assert {p.stem for p in notebook_pairs.sources()} == set(CONFIGS)
    drifted = notebook_pairs.drifted()
    assert not drifted, f"{drifted}: the .ipynb is not what its .py source gives; edit the .py, then `make notebooks`"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_notebooks_are_at_least_a_third_prose(name):
    share = notebook_pairs.prose_share(notebook_pairs.from_source(NOTEBOOKS / f"{name}.py"))
    assert share >= 1 / 3, f"{name}: {share:.0%} of its characters are markdown; issue 28 asks for at least a third"


def test_every_checked_cell_has_committed_expected_outputs():
    expected = json.loads(EXPECTED.read_text())
    for source in notebook_pairs.sources():
        checked = notebook_pairs.checked_cell_ids(notebook_pairs.from_source(source))
        assert set(expected.get(source.stem, {})) == set(checked), (
            f"{source.stem}: checked cells {checked} vs expectations {sorted(expected.get(source.stem, {}))}; "
            "record them with `python tests/notebook_pairs.py --record DIR`"
        )


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every notebook prepared at smoke size with its expected outputs, then executed once by nbval: (folder, nbval)."""
    import papermill

    from concrete_subspace.experiments import ensure_zoo

    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)
    ensure_zoo(seed=0, smoke=True, progress=False)
    tmp = tmp_path_factory.mktemp("notebooks")
    figures, cache = tmp / "figures", tmp / "cache"
    expected = json.loads(EXPECTED.read_text())
    for name in sorted(CONFIGS):
        path = tmp / f"{name}.ipynb"
        papermill.execute_notebook(
            str(NOTEBOOKS / f"{name}.ipynb"),
            str(path),
            kernel_name="python3",
            parameters={
                "scale": "mini",
                "smoke": True,
                "figures_dir": str(figures),
                "cache_dir": str(cache),
                **CI_PARAMETERS.get(name, {}),
            },
            prepare_only=True,
            progress_bar=False,
            log_output=False,
        )
        nb = nbformat.read(path, as_version=4)
        notebook_pairs.insert_outputs(nb, expected.get(name, {}))
        nbformat.write(nb, path)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--nbval-lax",
        "--nbval-current-env",
        "--nbval-sanitize-with",
        str(SANITIZE),
        "-o",
        "addopts=",
        "-o",
        "timeout=0",
        "--rootdir",
        str(tmp),
        *sorted(str(p) for p in tmp.glob("*.ipynb")),
    ]
    proc = subprocess.run(cmd, cwd=tmp, env={**os.environ, **OFFLINE}, capture_output=True, text=True, timeout=900)
    return tmp, proc


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.timeout(1500)  # the fixture runs every notebook (about 4 minutes on 2 shared cores)
def test_notebooks_pass_nbval(executed):
    _, proc = executed
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.timeout(1500)
def test_notebooks_write_results(executed):
    folder, _ = executed
    for name in CONFIGS:
        results = folder / "figures" / "mini-smoke" / name / "results.json"
        assert results.exists(), f"{name} wrote no results JSON"
        payload = json.loads(results.read_text())
        assert (
            payload["config"]["smoke"] is True
            and (payload["zoo_seed"], payload["run_seed"]) == (0, 0)
            and payload["versions"]["torch"]
        )
        assert payload["wall_seconds"] >= 0
        assert list(results.parent.glob("*.png")), f"{name} saved no PNG"
        assert list(results.parent.glob("*.pdf")), f"{name} saved no PDF"
        assert list(results.parent.glob("*.csv")) and list(results.parent.glob("*.md"))
        if name == "02_flan_t5_glue":  # at mini scale: the mini-text zoo, with its gates
            assert payload["skipped"] is False and (results.parent / "claims.md").exists()
