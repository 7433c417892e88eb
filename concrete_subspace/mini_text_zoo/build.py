"""Building a mini-text zoo: materialise the shipped one, reuse a complete one, or run every stage; manifest last."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import text as text_data
from ..mini_zoo.config import MANIFEST
from ..mini_zoo.determinism import deterministic
from ..mini_zoo.files import atomic_write_json, quiet_library_bars
from ..provenance import StageClock
from ..seeding import derive_seed
from . import shipped
from .config import BUILDING_MARKER, SPLITS, TextZooConfig, default_text_zoo_dir, text_zoo_config
from .encoder import load_base_encoder, merge_keys_for
from .evaluate import evaluate_text_zoo
from .manifest import _manifest, read_text_manifest, zoo_state
from .task_data import make_task_data, save_task_datasets, token_length
from .train import finetune_expert

log = logging.getLogger(__name__)


def build_text_zoo(
    out_dir: str | Path | None = None,
    *,
    seed: int = 0,
    smoke: bool = False,
    force: bool = False,
    progress: bool = True,
    config: TextZooConfig | None = None,
    from_scratch: bool = False,
) -> Path:
    """The mini-text zoo's directory: the shipped zoo materialised in the cache, or a zoo built from scratch.

    The package ships the seed-0 LoRA adapters (:mod:`.shipped`); asking for that zoo (no ``config``) merges them
    into the packaged base encoder, the adapters checked by sha256 and the data regenerated and checked. Other
    seeds, smoke zoos, a ``config`` and ``from_scratch=True`` fine-tune (about 6-7 min for the full zoo); a
    from-scratch build of the shipped zoo goes to its own directory (suffix ``-rebuilt``) so that it can be compared
    with the shipped one. Partial or other-version zoos are rebuilt, never used.
    """
    use_shipped = not from_scratch and config is None and shipped.ships(seed, smoke)
    if out_dir is not None:
        zoo_dir = Path(out_dir)
    else:
        zoo_dir = default_text_zoo_dir(seed, smoke)
        if from_scratch and shipped.ships(seed, smoke, any_format=True):
            zoo_dir = shipped.rebuilt_text_zoo_dir(seed)
    state = zoo_state(zoo_dir, seed, smoke)
    if state == "complete" and use_shipped and not force and not _holds_shipped(zoo_dir):
        state = "partial"  # a zoo built here, or an older shipped one: replace it by the shipped zoo
    if state == "complete" and not force:
        log.info("zoo: reusing the complete cached mini-text zoo at %s; --force rebuilds it", zoo_dir)
        return zoo_dir
    if state == "foreign":
        raise FileExistsError(
            f"{zoo_dir} exists and holds files that are not a mini-text zoo; choose another --out or empty it"
        )
    if state in ("partial", "complete"):
        why = "forced rebuild" if state == "complete" else "incomplete, other-version or not-shipped zoo"
        log.info("zoo: %s holds an %s; deleting and rebuilding it", zoo_dir, why)
        shutil.rmtree(zoo_dir)
    zoo_dir.mkdir(parents=True, exist_ok=True)
    (zoo_dir / BUILDING_MARKER).write_text(f"build started {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n")
    start = time.perf_counter()
    with deterministic(), quiet_library_bars():
        if use_shipped:
            manifest = shipped.materialise(zoo_dir, progress)
        else:
            manifest = _build(zoo_dir, config or text_zoo_config(smoke), seed, smoke, progress)
    atomic_write_json(zoo_dir / MANIFEST, manifest)
    (zoo_dir / BUILDING_MARKER).unlink()
    if use_shipped:
        log.info(
            "zoo: the shipped mini-text zoo, checked and materialised in %s in %.0f s",
            zoo_dir,
            time.perf_counter() - start,
        )
    else:
        log.info("zoo: built %s in %.0f s", zoo_dir, manifest["build_seconds"]["total"])
    return zoo_dir


def _holds_shipped(zoo_dir: Path) -> bool:
    """Whether a complete cached text zoo is the current shipped zoo (same adapter files and data, by sha256)."""
    cached, package = read_text_manifest(zoo_dir), shipped.read_shipped_text_manifest()
    return cached.get("files") == package["files"] and cached.get("data_sha256") == package["data_sha256"]


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

    losses, states = {}, {"pretrained": shipped.state_sha256(bert.state_dict())}
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
            adapter_dir=shipped.adapter_dir(zoo_dir, task),
        )
        expert.save_pretrained(zoo_dir / "finetuned" / task)
        states[task] = shipped.state_sha256(expert.state_dict())
        del expert
    clock.lap("finetune")

    manifest = _manifest(cfg, seed, smoke, bert, merge_keys_for(encoder, cfg), lengths, data, losses)
    manifest.update(
        files=shipped.adapter_file_hashes(zoo_dir, list(cfg.tasks)),
        data_sha256=shipped.task_data_hashes(data),
        state_sha256=states,
        cache_files=shipped.cache_file_hashes(zoo_dir, list(cfg.tasks)),
        recipe_fingerprint=shipped.recipe_fingerprint(cfg),
        kernel=shipped.kernel_path(),
    )
    accuracy, premise = evaluate_text_zoo(zoo_dir, manifest, cfg, progress)
    manifest.update(accuracy=accuracy, entropy_premise=premise)
    clock.lap("evaluate")
    manifest["build_seconds"] = clock.total()
    return manifest
