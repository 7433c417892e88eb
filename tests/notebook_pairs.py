"""The notebooks' source is notebooks/NAME.py (jupytext percent format); notebooks/NAME.ipynb is written from it.

    python tests/notebook_pairs.py           # write every .ipynb from its .py (what `make notebooks` runs)
    python tests/notebook_pairs.py --check   # exit 1 naming the pairs whose .ipynb is not what its .py gives
    python tests/notebook_pairs.py --record DIR   # expected outputs of the checked cells, from DIR/NAME*.ipynb
    python tests/notebook_pairs.py --prose   # each notebook's prose share (markdown characters / all characters)

The .ipynb is what papermill runs: no outputs, no execution counts, stable cell ids (cell-00, cell-01, ...) and only
the kernelspec as notebook metadata, so regenerating an unchanged source changes nothing.
tests/test_notebooks.py runs the same check. The headline cells (marked ``# NBVAL_CHECK_OUTPUT``) have committed
expected outputs (tests/expected/notebook_outputs.json, recorded from notebooks executed at smoke size), which nbval
compares with one smoke-size execution.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jupytext
import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = Path(__file__).resolve().parent / "expected" / "notebook_outputs.json"
CHECK = "# NBVAL_CHECK_OUTPUT"


def sources() -> list[Path]:
    """The notebook sources: notebooks/NN_name.py."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def from_source(source: Path) -> nbformat.NotebookNode:
    """The notebook of a percent-format source, as committed: no outputs, stable ids, kernelspec only."""
    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata = nbformat.from_dict(
        {"kernelspec": dict(nb.metadata["kernelspec"]), "language_info": {"name": "python"}}
    )
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def prose_share(nb: nbformat.NotebookNode) -> float:
    """Characters of the markdown cells over characters of all cells (markdown + code), from the committed source.

    Conservative: the "What we see" cells are code cells (their paragraph is rendered at run time from the run's
    tables by experiments/story.py), so their text is not counted as prose here, only their code.
    """
    markdown = sum(len(c.source) for c in nb.cells if c.cell_type == "markdown")
    code = sum(len(c.source) for c in nb.cells if c.cell_type == "code")
    return markdown / (markdown + code)


def rendered(source: Path) -> str:
    """The .ipynb text that ``source`` gives."""
    return nbformat.writes(from_source(source)) + "\n"


def drifted() -> list[str]:
    """Pairs whose .ipynb differs from what its .py gives (or is missing), and .ipynb files without a source."""
    out = [
        s.name
        for s in sources()
        if not s.with_suffix(".ipynb").exists() or s.with_suffix(".ipynb").read_text() != rendered(s)
    ]
    out += [f"{p.name} (no .py source)" for p in sorted(NOTEBOOKS.glob("*.ipynb")) if not p.with_suffix(".py").exists()]
    return out


def checked_cell_ids(nb: nbformat.NotebookNode) -> list[str]:
    """Ids of the code cells whose outputs nbval compares (first line ``# NBVAL_CHECK_OUTPUT``)."""
    return [c.id for c in nb.cells if c.cell_type == "code" and c.source.startswith(CHECK)]


def comparable(outputs: list) -> list[dict]:
    """Outputs as nbval compares them: no execution counts, no images (nbval skips them), plain dicts."""
    kept = []
    for out in outputs:
        out = {k: v for k, v in dict(out).items() if k != "execution_count"}
        if "data" in out:
            out["data"] = {k: v for k, v in out["data"].items() if not k.startswith("image/")}
            out.setdefault("metadata", {})
        kept.append(out)
    return kept


def insert_outputs(nb: nbformat.NotebookNode, expected: dict[str, list]) -> None:
    """Put the expected outputs into the checked cells of ``nb`` (cell id -> outputs), for nbval to compare.

    The cells get an execution count (nbval refuses outputs in a cell that was never run; it does not compare counts).
    """
    for cell in nb.cells:
        if cell.get("id") in expected:
            cell.execution_count = 1
            cell.outputs = [
                nbformat.from_dict({**o, "execution_count": 1} if o["output_type"] == "execute_result" else o)
                for o in expected[cell.id]
            ]


def record(folder: Path) -> dict[str, dict[str, list]]:
    """The checked cells' outputs of the executed notebooks ``folder/NAME*.ipynb``, per notebook and cell id."""
    expected = {}
    for source in sources():
        executed = sorted(folder.glob(f"{source.stem}*.ipynb"))
        if not executed:
            raise FileNotFoundError(f"no executed {source.stem}*.ipynb in {folder}")
        nb = nbformat.read(executed[0], as_version=4)
        ids = set(checked_cell_ids(from_source(source)))
        expected[source.stem] = {c.id: comparable(c.outputs) for c in nb.cells if c.get("id") in ids}
    return expected


def main(argv: list[str]) -> int:
    if argv[:1] == ["--record"] and len(argv) == 2:
        EXPECTED.write_text(json.dumps(record(Path(argv[1])), indent=1, sort_keys=True) + "\n")
        print("wrote", EXPECTED)
        return 0
    if argv == ["--prose"]:
        for source in sources():
            print(f"{source.stem}: {prose_share(from_source(source)):.2f}")
        return 0
    if argv == ["--check"]:
        bad = drifted()
        for name in bad:
            print(f"drifted: {name} (edit the .py, then `make notebooks`)", file=sys.stderr)
        return 1 if bad else 0
    for source in sources():
        source.with_suffix(".ipynb").write_text(rendered(source))
        print("wrote", source.with_suffix(".ipynb").relative_to(NOTEBOOKS.parent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
