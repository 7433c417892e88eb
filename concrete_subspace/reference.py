"""Published numbers of the Concrete Subspace paper, shipped as package data, to show BESIDE our results.

Source: the authors' own result files (tanganke/subspace_fusion, ``results/``; arXiv 2312.06173), rows marked
``adamerging_paper`` copied there from the AdaMerging paper (Yang et al., ICLR 2024). The CSVs and their README
are kept in ``concrete_subspace/data/reference/``. These are
facts to compare against: every frame returned here carries a ``source`` column and is labelled "published";
nothing in this module computes or presents them as results of this package.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

REFERENCE_FILES: dict[str, str] = {
    "clip_vit_b32_8tasks": "clip_vit_b32_8tasks.csv",
    "clip_vit_l14_8tasks": "clip_vit_l14_8tasks.csv",
    "clip_vit_b32_generalization": "clip_vit_b32_generalization.csv",
    "curves_vit_b32": "curves_vit_b32.csv",
    "flan_t5_base_lora16_glue": "flan_t5_base_lora16_glue.csv",
    "flan_t5_large_lora16_glue": "flan_t5_large_lora16_glue.csv",
}

#: Row names of the published tables -> our method / row names.
METHOD_ALIASES: dict[str, str] = {
    "pretrained_zeroshot": "zero_shot",
    "pretrained": "zero_shot",
    "task_arithmetic_0.3": "task_arithmetic",
    "ties_merging_0.3": "ties_merging",
}

#: Architecture / model -> the published table that matches it.
TABLE_FOR: dict[str, str] = {
    "ViT-B-32": "clip_vit_b32_8tasks",
    "ViT-L-14": "clip_vit_l14_8tasks",
    "flan-t5-base": "flan_t5_base_lora16_glue",
    "flan-t5-large": "flan_t5_large_lora16_glue",
}

SOURCE = (
    "Tang et al., arXiv 2312.06173, authors' result files (github.com/tanganke/subspace_fusion, results/); "
    "rows marked adamerging_paper from Yang et al., AdaMerging, ICLR 2024"
)


def _data_dir():
    return resources.files("concrete_subspace") / "data" / "reference"


def readme() -> str:
    """The README of the reference data (where the numbers come from, and the caveats of the source files)."""
    return (_data_dir() / "README.md").read_text()


def load_reference(name: str) -> pd.DataFrame:
    """One published table as a DataFrame (method names mapped to ours via :data:`METHOD_ALIASES`)."""
    if name not in REFERENCE_FILES:
        raise KeyError(f"unknown reference table {name!r}; known: {list(REFERENCE_FILES)}")
    with (_data_dir() / REFERENCE_FILES[name]).open() as fh:
        frame = pd.read_csv(fh)
    if "method" in frame.columns:
        frame["method"] = frame["method"].map(lambda m: METHOD_ALIASES.get(m, m))
    return frame


def reference_long(name: str) -> pd.DataFrame:
    """A published per-task table in long form: method, task, accuracy, source (the 'avg' column kept as task 'average')."""
    frame = load_reference(name)
    tasks = [c for c in frame.columns if c not in ("method", "source")]
    long = frame.melt(id_vars=["method", "source"], value_vars=tasks, var_name="task", value_name="accuracy")
    long["task"] = long["task"].replace({"avg": "average"})
    return long


def beside(ours: pd.DataFrame, published: pd.DataFrame, on: list[str], value: str = "accuracy") -> pd.DataFrame:
    """Our numbers and the published ones side by side: columns ``<value> (ours)``, ``<value> (published)``, gap."""
    left = ours[on + [value]].rename(columns={value: f"{value} (ours)"})
    right = published[on + [value, "source"]].rename(
        columns={value: f"{value} (published)", "source": "published source"}
    )
    merged = left.merge(right, on=on, how="left")
    merged["ours - published"] = merged[f"{value} (ours)"] - merged[f"{value} (published)"]
    return merged
