"""Loading a built mini-text zoo as a MergeProblem (encoder, prompt heads, tokenised data)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..mini_zoo.config import MANIFEST
from ..mini_zoo.files import quiet_library_bars
from ..mini_zoo.problem import select_tasks
from .config import SCALE
from .manifest import read_text_manifest
from .task_data import load_text_split


def load_text_zoo_problem(
    zoo_dir: str | Path,
    *,
    tasks: Sequence[str] | None = None,
    split: str = "test",
    batch_size: int = 16,
    seed: int = 0,
    device: str | torch.device = "cpu",
):
    """The mini-text zoo as a MergeProblem: test-time batches and evaluation from ``split``, train for Fisher/RegMean.

    The weights it reads are checked against the manifest's sha256 first (a corrupted or edited file is named)."""
    from .shipped import REBUILD, check_files

    manifest = read_text_manifest(zoo_dir)
    check_files(Path(zoo_dir), manifest.get("cache_files", {}), REBUILD)
    return _problem_from(
        Path(zoo_dir),
        manifest,
        tasks=tasks,
        split=split,
        batch_size=batch_size,
        seed=seed,
        device=device,
    )


def _load_bert_state(path: Path, keys: Sequence[str], device) -> dict[str, Tensor]:
    """The merged keys (``bert.``-prefixed) of a saved BertModel directory."""
    from safetensors.torch import load_file

    file = path / "model.safetensors"
    if not file.exists():
        raise FileNotFoundError(f"no model.safetensors in {path}")
    state = load_file(str(file), device=str(device))
    missing = [k for k in keys if k.removeprefix("bert.") not in state]
    if missing:
        raise KeyError(f"{file} lacks {len(missing)} of the merged keys, e.g. {missing[:3]}")
    return {k: state[k.removeprefix("bert.")] for k in keys}


def _problem_from(zoo_dir: Path, manifest: dict, *, tasks, split: str, batch_size: int, seed: int, device):
    from transformers import AutoTokenizer, BertModel

    from ..models.text_encoder import SentenceEncoder, build_text_problem, tokenize, zero_shot_head

    tasks, known = select_tasks(manifest, tasks, split, zoo="mini-text zoo")
    device = torch.device(device)
    with quiet_library_bars():
        bert = BertModel.from_pretrained(zoo_dir / "pretrained", add_pooling_layer=False).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(zoo_dir / "pretrained")
    encoder = SentenceEncoder(bert).eval().requires_grad_(False)
    cfg = manifest["config"]
    heads = {
        t: zero_shot_head(
            encoder,
            tokenizer,
            manifest["tasks"][t]["classnames"],
            manifest["tasks"][t]["templates"],
            cfg["logit_scale"],
            cfg["max_length"],
        )
        for t in tasks
    }
    keys = manifest["encoder"]["merged_keys"]

    def load_finetuned(task: str) -> dict[str, Tensor]:
        if task not in manifest["layout"]["finetuned"]:
            raise KeyError(f"no fine-tuned model for task {task!r}; tasks: {known}")
        return _load_bert_state(zoo_dir / manifest["layout"]["finetuned"][task], keys, device)

    def tokenised(task: str, which: str):
        texts, labels = load_text_split(zoo_dir, task, which)
        return tokenize(tokenizer, texts, manifest["tasks"][task]["max_length"]), labels

    evaluation = {t: tokenised(t, split) for t in tasks}
    train = {t: tokenised(t, "train") for t in tasks}
    return build_text_problem(
        encoder,
        keys,
        heads,
        load_finetuned,
        evaluation,
        batch_size=batch_size,
        seed=seed,
        train=train,
        info={
            "zoo_dir": str(zoo_dir),
            "split": split,
            "seed": manifest["seed"],
            "batch_seed": seed,
            "zoo_created": manifest.get("created"),
            "manifest": str(zoo_dir / MANIFEST),
            "scale": SCALE,
        },
    )
