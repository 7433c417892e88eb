"""Loading a built zoo as a MergeProblem (the models, heads and data the merge methods read)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .config import MANIFEST, use_offline_hub
from .files import load_vision_state, quiet_library_bars
from .manifest import read_manifest
from .model import to_pixel_values
from .shipped import check_files
from .task_data import load_task_split


def load_zoo_problem(
    zoo_dir: str | Path,
    *,
    tasks: Sequence[str] | None = None,
    split: str = "test",
    batch_size: int = 16,
    seed: int = 0,
    device: str | torch.device = "cpu",
):
    """The zoo as a MergeProblem: TTA batches and evaluation from ``split`` (as in the paper), train for Fisher/RegMean.

    The weight files are checked against the manifest's sha256 first (a corrupted or edited file is named)."""
    use_offline_hub()
    manifest = read_manifest(zoo_dir)
    check_files(Path(zoo_dir), manifest.get("files", {}))
    return _problem_from(
        Path(zoo_dir), manifest, tasks=tasks, split=split, batch_size=batch_size, seed=seed, device=device
    )


def select_tasks(
    manifest: dict, tasks: Sequence[str] | None, split: str, zoo: str = "zoo"
) -> tuple[list[str], list[str]]:
    """(requested tasks, all tasks) of a zoo's manifest, after checking the split; an unknown task name is an error."""
    if split not in ("validation", "test"):
        raise ValueError(f"split must be 'validation' or 'test' (TTA and evaluation data), got {split!r}")
    known = list(manifest["task_names"])
    tasks = list(tasks) if tasks is not None else list(known)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise KeyError(f"task(s) {unknown} are not in this {zoo}; its tasks: {known}")
    return tasks, known


def _problem_from(zoo_dir: Path, manifest: dict, *, tasks, split: str, batch_size: int, seed: int, device):
    """Build the MergeProblem from a manifest dict (used during the build, before the manifest is on disk)."""
    from transformers import AutoTokenizer, CLIPModel

    from ..models.clip_hf import ImageEncoder, build_clip_problem, merge_keys, zero_shot_head

    tasks, known = select_tasks(manifest, tasks, split)
    device = torch.device(device)
    with quiet_library_bars():
        clip = CLIPModel.from_pretrained(zoo_dir / "pretrained").to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(zoo_dir / "pretrained")
    heads = {
        t: zero_shot_head(
            clip, tokenizer, manifest["tasks"][t]["classnames"], manifest["tasks"][t]["templates"], device
        )
        for t in tasks
    }
    encoder = ImageEncoder.from_clip(clip).eval().requires_grad_(False)
    keys = merge_keys(encoder)

    def load_finetuned(task: str) -> dict[str, Tensor]:
        if task not in manifest["layout"]["finetuned"]:
            raise KeyError(f"no fine-tuned model for task {task!r}; tasks: {known}")
        return load_vision_state(zoo_dir / manifest["layout"]["finetuned"][task], keys, device)

    splits = {s: {t: load_task_split(zoo_dir, t, s) for t in tasks} for s in ("train", split)}
    evaluation = {t: splits[split][t] for t in tasks}
    unlabeled = {t: splits[split][t][0] for t in tasks}
    train = {t: splits["train"][t] for t in tasks}
    return build_clip_problem(
        encoder,
        heads,
        load_finetuned,
        unlabeled,
        evaluation,
        batch_size=batch_size,
        seed=seed,
        train=train,
        transform=lambda x: to_pixel_values(x).to(device),
        info={
            "zoo_dir": str(zoo_dir),
            "split": split,
            "manifest": str(zoo_dir / MANIFEST),
            "seed": manifest["seed"],
            "scale": "mini",
        },
    )
