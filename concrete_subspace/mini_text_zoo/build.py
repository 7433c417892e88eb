"""Building a mini-text zoo: reuse a complete one, otherwise run every stage and write the manifest last."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import text as text_data
from ..mini_zoo.config import MANIFEST
from ..mini_zoo.determinism import deterministic
from ..mini_zoo.files import _atomic_write_json, quiet_library_bars
from ..provenance import StageClock
from ..seeding import derive_seed
from .config import BUILDING_MARKER, SPLITS, TextZooConfig, default_text_zoo_dir, text_zoo_config
from .encoder import load_base_encoder, merge_keys_for
from .evaluate import _evaluate
from .manifest import _manifest, _zoo_state
from .task_data import make_task_data, save_task_datasets, token_length
from .train import finetune_expert


def build_text_zoo(
    out_dir: str | Path | None = None,
    *,
    seed: int = 0,
    smoke: bool = False,
    force: bool = False,
    progress: bool = True,
    config: TextZooConfig | None = None,
) -> Path:
    """Build (or reuse) the mini-text zoo; returns its directory. Partial or other-version zoos are rebuilt."""
    zoo_dir = Path(out_dir) if out_dir is not None else default_text_zoo_dir(seed, smoke)
    state = _zoo_state(zoo_dir, seed, smoke)
    if state == "complete" and not force:
        print(f"zoo: reusing the complete cached mini-text zoo at {zoo_dir}; --force rebuilds it")
        return zoo_dir
    if state == "foreign":
        raise FileExistsError(
            f"{zoo_dir} exists and holds files that are not a mini-text zoo; choose another --out or empty it"
        )
    if state in ("partial", "complete"):
        print(
            f"zoo: {zoo_dir} holds an {'forced rebuild' if state == 'complete' else 'incomplete or other-version zoo'}; "
            f"deleting and rebuilding it"
        )
        shutil.rmtree(zoo_dir)
    zoo_dir.mkdir(parents=True, exist_ok=True)
    (zoo_dir / BUILDING_MARKER).write_text(f"build started {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n")
    with deterministic(), quiet_library_bars():
        manifest = _build(zoo_dir, config or text_zoo_config(smoke), seed, smoke, progress)
    _atomic_write_json(zoo_dir / MANIFEST, manifest)
    (zoo_dir / BUILDING_MARKER).unlink()
    print(f"zoo: built {zoo_dir} in {manifest['build_seconds']['total']:.0f} s")
    return zoo_dir


def _build(zoo_dir: Path, cfg: TextZooConfig, seed: int, smoke: bool, progress: bool) -> dict:
    from ..models.text_encoder import SentenceEncoder, tokenize, zero_shot_head

    clock = StageClock()
    data = make_task_data(cfg, seed)
    save_task_datasets(data, zoo_dir / "datasets")
    bert, tokenizer = load_base_encoder(cfg, seed)
    bert.save_pretrained(zoo_dir / "pretrained")
    tokenizer.save_pretrained(zoo_dir / "pretrained")
    lengths = {
        t_: token_length(tokenizer, [x for s in SPLITS for x in data[t_][s][0]], cfg.max_length) for t_ in cfg.tasks
    }
    encoder = SentenceEncoder(bert).eval().requires_grad_(False)
    heads = {
        t_: zero_shot_head(
            encoder,
            tokenizer,
            text_data.TASKS[t_].classnames,
            text_data.TASKS[t_].templates,
            cfg.logit_scale,
            cfg.max_length,
        )
        for t_ in cfg.tasks
    }
    clock.lap("data")

    losses = {}
    for i, task in enumerate(tqdm(cfg.tasks, desc="zoo: fine-tune experts", disable=not progress)):
        texts, labels = data[task]["train"]
        tokens = tokenize(tokenizer, texts, lengths[task])
        expert, losses[task] = finetune_expert(
            bert,
            heads[task],
            tokens,
            torch.tensor(labels),
            cfg,
            derive_seed(seed, i, stride=100),
            f"fine-tune {task}",
            progress,
        )
        expert.save_pretrained(zoo_dir / "finetuned" / task)
        del expert
    clock.lap("finetune")

    manifest = _manifest(cfg, seed, smoke, bert, merge_keys_for(encoder, cfg), lengths, data, losses)
    accuracy, premise = _evaluate(zoo_dir, manifest, cfg, progress)
    manifest.update(accuracy=accuracy, entropy_premise=premise)
    clock.lap("evaluate")
    manifest["build_seconds"] = clock.total()
    return manifest
