"""Issue 29: merging your own CLIP models on your own image folders (`merge --config`, `merge_own_models`).

End to end: the smoke zoo exported as PNG folders and class-name files and merged through the command gives
the library's own accuracy on the same data and seed. Then a tiny random CLIPModel (built here, no download)
for the output format, resuming, and every bad input answered in one line with nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from concrete_subspace.cli import main
from concrete_subspace.own_models import OwnModelsError, merge_own_models

TASKS = ("mnist", "digits")
STEPS = 3


def export_zoo_task(zoo_dir: Path, manifest: dict, task: str, root: Path) -> dict:
    """One zoo task's test split as <root>/<task>/<class>/<index>.png + classes.txt + templates.txt."""
    from concrete_subspace.mini_zoo.task_data import load_task_split

    images, labels = load_task_split(zoo_dir, task, "test")
    names = manifest["tasks"][task]["classnames"]
    folder = root / task / "images"
    for i, (image, label) in enumerate(zip(images.numpy(), labels.tolist(), strict=True)):
        (folder / names[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / names[label] / f"{i:05d}.png")
    (root / task / "classes.txt").write_text("\n".join(names) + "\n")
    (root / task / "templates.txt").write_text("\n".join(manifest["tasks"][task]["templates"]) + "\n")
    return {
        "images": str(folder),
        "classnames": str(root / task / "classes.txt"),
        "templates": str(root / task / "templates.txt"),
    }


@pytest.fixture(scope="module")
def smoke_zoo():
    from concrete_subspace.experiments import ensure_zoo

    zoo_dir = ensure_zoo(seed=0, smoke=True, progress=False)
    return zoo_dir, json.loads((zoo_dir / "manifest.json").read_text())


def test_exported_smoke_zoo_merged_by_the_command_matches_the_library_run(smoke_zoo, tmp_path, capsys):
    from transformers import CLIPModel

    from concrete_subspace.evaluation import evaluate
    from concrete_subspace.registry import run_method
    from concrete_subspace.zoo import load_zoo_problem

    zoo_dir, manifest = smoke_zoo
    config = {
        "models": {
            "pretrained": str(zoo_dir / "pretrained"),
            "finetuned": {t: str(zoo_dir / manifest["layout"]["finetuned"][t]) for t in TASKS},
        },
        "tasks": {t: export_zoo_task(zoo_dir, manifest, t, tmp_path / "data") for t in TASKS},
        "method": "concrete_task_arithmetic",
        "params": {"steps": STEPS, "log_every": 1},
        "seed": 0,
        "batch_size": 16,
        "out": str(tmp_path / "merged"),
    }
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(config))
    assert main(["merge", "--config", str(tmp_path / "merge.yaml"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Concrete Task Arithmetic" in printed and "mnist" in printed and "digits" in printed

    problem = load_zoo_problem(zoo_dir, tasks=TASKS, split="test", batch_size=16, seed=0)
    library = run_method("concrete_task_arithmetic", problem, steps=STEPS, log_every=1, progress=False)
    expected = evaluate(problem, library.state)
    report = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert report["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert [row["loss"] for row in report["history"]] == pytest.approx([row["loss"] for row in library.history])
    merged = CLIPModel.from_pretrained(tmp_path / "merged")
    for key, value in library.state.items():
        torch.testing.assert_close(merged.get_parameter(key), value, rtol=0, atol=0)
    from safetensors.torch import load_file

    torch.testing.assert_close(
        load_file(tmp_path / "merged" / "mask.safetensors")["mask_logits"], library.extras["mask_logits"]
    )
    assert not any(p.name.startswith(".merged") for p in tmp_path.iterdir())  # no resume or temp leftovers
