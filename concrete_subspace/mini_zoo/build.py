"""Building a mini zoo: reuse a complete one, otherwise run every stage and write the manifest last."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import mini
from ..provenance import StageClock
from ..seeding import derive_seed
from . import shipped
from .config import BUILDING_MARKER, MANIFEST, MiniConfig, default_zoo_dir, mini_config, use_offline_hub
from .determinism import _seeded_init, deterministic
from .evaluate import _geometry, evaluate_zoo
from .files import atomic_write_json, quiet_library_bars, save_vision_model
from .manifest import read_manifest, zoo_manifest, zoo_state
from .methods import _method_results, _methods_fingerprint, update_method_results
from .model import build_clip_config, build_processor, build_tokenizer
from .task_data import generate_task_data, save_task_datasets
from .train import finetune, pretrain

log = logging.getLogger(__name__)


def build_zoo(
    out_dir: str | Path | None = None,
    *,
    scale: str = "mini",
    seed: int = 0,
    smoke: bool = False,
    force: bool = False,
    progress: bool = True,
    methods: bool = False,
    precision: str = "fp32",
    from_scratch: bool = False,
) -> Path:
    """The mini zoo's directory: the shipped zoo materialised in the cache (seconds), or a zoo built from scratch.

    The package ships the seed-0 fp32 zoo (:mod:`.shipped`); asking for it gives that zoo, its files checked by
    sha256, its data regenerated and checked. Other seeds, smoke and bf16 zoos, and ``from_scratch=True``, build
    (pre-train, fine-tune: about 25 min for the full zoo); a from-scratch build of the shipped zoo goes to its own
    directory (suffix ``-rebuilt``) so that it can be compared with the shipped one (:func:`.shipped.compare_to_shipped`).
    Partial or other-version zoos are rebuilt, never used.

    ``methods=True`` also records the core merge methods' test-split results at MINI_DEFAULTS in the manifest (224 s
    on zoo v2 here; notebook 01 computes the same runs, so the default build skips them). ``precision="bf16"`` trains
    under bf16 autocast (saved weights fp32; default directory suffixed ``-bf16``).
    """
    if scale != "mini":
        raise ValueError(
            f"build_zoo builds only the 'mini' scale (got {scale!r}); the paper scale uses Hub checkpoints"
        )
    use_offline_hub()
    cfg = mini_config(smoke, precision)
    use_shipped = not from_scratch and shipped.ships(seed, smoke, precision)
    if out_dir is not None:
        zoo_dir = Path(out_dir)
    else:
        zoo_dir = default_zoo_dir(seed, smoke, precision)
        if from_scratch and shipped.ships(seed, smoke, precision, any_format=True):
            zoo_dir = rebuilt_zoo_dir(seed)
    state = zoo_state(zoo_dir, seed, smoke, precision)
    if state == "complete" and use_shipped and not force and not _holds_shipped(zoo_dir):
        state = "partial"  # a zoo built here, or an older shipped one: replace it by the shipped zoo
    if state == "complete" and not force:
        if methods and read_manifest(zoo_dir).get("methods_fingerprint") != _methods_fingerprint(cfg):
            log.info(
                "zoo: reusing the complete cached zoo at %s; computing its merge-method results "
                "(missing or made with other MINI_DEFAULTS)",
                zoo_dir,
            )
            update_method_results(zoo_dir, progress=progress)
        else:
            log.info(
                "zoo: reusing the complete cached zoo at %s (seed %d%s); --force rebuilds it",
                zoo_dir,
                seed,
                ", smoke" if smoke else "",
            )
        return zoo_dir
    if state == "foreign":
        raise FileExistsError(
            f"{zoo_dir} exists and holds files that are not a mini zoo; choose another --out or empty it"
        )
    if state in ("partial", "complete"):
        why = (
            "forced rebuild"
            if state == "complete"
            else "incomplete, interrupted, other-seed, -precision or -version zoo"
        )
        log.info("zoo: %s holds an %s; deleting and rebuilding it", zoo_dir, why)
        shutil.rmtree(zoo_dir)
    zoo_dir.mkdir(parents=True, exist_ok=True)
    (zoo_dir / BUILDING_MARKER).write_text(f"build started {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n")
    with deterministic(), quiet_library_bars():
        if use_shipped:
            start = time.perf_counter()
            manifest = shipped.materialise(zoo_dir, progress)
            if methods:
                manifest["methods"] = _method_results(zoo_dir, manifest, cfg, seed, progress)
                manifest["methods_fingerprint"] = _methods_fingerprint(cfg)
        else:
            manifest = _build(zoo_dir, cfg, seed, smoke, progress, methods)
            manifest["files"] = shipped.zoo_file_hashes(zoo_dir)
    atomic_write_json(zoo_dir / MANIFEST, manifest)
    (zoo_dir / BUILDING_MARKER).unlink()
    if use_shipped:
        log.info("zoo: the shipped zoo, checked and materialised in %s in %.0f s", zoo_dir, time.perf_counter() - start)
    else:
        log.info("zoo: built %s in %.0f s", zoo_dir, manifest["build_seconds"]["total"])
    return zoo_dir


def rebuilt_zoo_dir(seed: int = 0) -> Path:
    """Where a from-scratch rebuild of the shipped zoo goes (beside the shipped zoo's materialisation)."""
    zoo_dir = default_zoo_dir(seed)
    return zoo_dir.with_name(zoo_dir.name + "-rebuilt")


def _holds_shipped(zoo_dir: Path) -> bool:
    """Whether a complete cached zoo is the current shipped zoo (same files, by sha256)."""
    return read_manifest(zoo_dir).get("files") == shipped.read_shipped_manifest()["files"]


def _build(zoo_dir: Path, cfg: MiniConfig, seed: int, smoke: bool, progress: bool, methods: bool) -> dict:
    """Every stage of a build; returns the manifest (the caller writes it last)."""
    from transformers import CLIPModel

    from ..models.clip_hf import ImageEncoder, pretrained_state, zero_shot_head

    clock = StageClock()
    data = generate_task_data(cfg, seed, progress)
    data_sha256 = shipped.task_data_hashes(data)
    pre_x, pre_captions, _ = mini.make_pretraining_set(
        seed, cfg.pretrain_per_task, cfg.sizes, cfg.unnamed_classes, cfg.generic_classes
    )
    save_task_datasets(data, zoo_dir / "datasets")
    clock.lap("data")

    tokenizer = build_tokenizer(mini.vocabulary(), cfg.max_text_len)
    processor = build_processor(tokenizer)
    config = build_clip_config(cfg, len(tokenizer))
    clip = _seeded_init(seed, lambda: CLIPModel(config))
    pretrain_losses = pretrain(clip, tokenizer, pre_x, pre_captions, cfg, seed, progress)
    clip.save_pretrained(zoo_dir / "pretrained")
    processor.save_pretrained(zoo_dir / "pretrained")
    clock.lap("pretrain")

    heads = {
        task: zero_shot_head(clip, tokenizer, mini.TASKS[task].classnames, mini.TASKS[task].templates)
        for task in cfg.tasks
    }
    encoder = ImageEncoder.from_clip(clip).eval().requires_grad_(False)
    theta0 = {k: v.clone() for k, v in pretrained_state(encoder).items()}
    finetuned, finetune_losses = {}, {}
    for i, task in enumerate(tqdm(cfg.tasks, desc="zoo: fine-tune experts", disable=not progress)):
        expert = copy.deepcopy(encoder)
        x, y = data[task]["train"]
        finetune_losses[task] = finetune(
            expert,
            heads[task],
            torch.from_numpy(x),
            torch.from_numpy(y),
            cfg,
            derive_seed(seed, i, stride=100),
            f"fine-tune {task}",
            progress,
        )
        save_vision_model(expert.vision_model, zoo_dir / "finetuned" / task)
        finetuned[task] = {k: v.detach().clone() for k, v in pretrained_state(expert).items()}
    clock.lap("finetune")

    accuracy, premise = evaluate_zoo(encoder, theta0, finetuned, heads, data, cfg, progress)
    clock.lap("evaluate")
    geometry = _geometry(encoder, theta0, finetuned, heads, data, accuracy, seed)
    clock.lap("geometry")
    manifest = zoo_manifest(
        cfg, seed, smoke, tokenizer, clip, accuracy, premise, pretrain_losses, finetune_losses, clock.seconds
    )
    manifest["geometry"] = geometry
    manifest.update(
        data_sha256=data_sha256, recipe_fingerprint=shipped.recipe_fingerprint(cfg), kernel=shipped.kernel_path()
    )
    if methods:
        manifest["methods"] = _method_results(zoo_dir, manifest, cfg, seed, progress)
        manifest["methods_fingerprint"] = _methods_fingerprint(cfg)
        clock.lap("methods")
    manifest["build_seconds"] = clock.total()
    return manifest
