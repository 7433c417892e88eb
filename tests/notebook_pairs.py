"""The notebooks' source is notebooks/NAME.py (jupytext percent format); notebooks/NAME.ipynb is written from it.

    python tests/notebook_pairs.py           # write every .ipynb from its .py (what `make notebooks` runs)
    python tests/notebook_pairs.py --check   # exit 1 naming the pairs whose .ipynb is not what its .py gives

The .ipynb is what papermill runs: no outputs, no execution counts, stable cell ids (cell-00, cell-01, ...) and only
the kernelspec as notebook metadata, so regenerating an unchanged source changes nothing.
tests/test_notebooks.py runs the same check.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def sources() -> list[Path]:
    """The notebook sources: notebooks/NN_name.py."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def from_source(source: Path) -> nbformat.NotebookNode:
    """The notebook of a percent-format source, as committed: no outputs, stable ids, kernelspec only."""
    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata = nbformat.from_dict({"kernelspec": dict(nb.metadata["kernelspec"]),
                                      "language_info": {"name": "python"}})
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def rendered(source: Path) -> str:
    """The .ipynb text that ``source`` gives."""
    return nbformat.writes(from_source(source)) + "\n"


def drifted() -> list[str]:
    """Pairs whose .ipynb differs from what its .py gives (or is missing), and .ipynb files without a source."""
    out = [s.name for s in sources() if not s.with_suffix(".ipynb").exists()
           or s.with_suffix(".ipynb").read_text() != rendered(s)]
    out += [f"{p.name} (no .py source)" for p in sorted(NOTEBOOKS.glob("*.ipynb")) if not p.with_suffix(".py").exists()]
    return out


def main(argv: list[str]) -> int:
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
