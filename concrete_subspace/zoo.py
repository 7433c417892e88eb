"""The offline ``mini`` model zoo: a small CLIP pre-trained here, fine-tuned on eight tasks, saved as HF directories.

Layout of a zoo directory (plain Hugging Face formats, so other merging libraries can load the same zoo)::

    pretrained/           CLIPModel (safetensors) + CLIPProcessor (image processor + word-level tokenizer)
    finetuned/<task>/     CLIPVisionModel fine-tuned on <task> against its frozen zero-shot head
    datasets/<task>/      datasets.DatasetDict (train / validation / test; uint8 "image" arrays, "label")
    manifest.json         written last, atomically: tasks, class names, templates, seeds, versions,
                          accuracies, entropy-premise statistics, merge-method results, build times

A directory is a complete zoo iff ``manifest.json`` exists with ``format_version == ZOO_FORMAT_VERSION``.
Everything is deterministic from the seed (explicit generators, deterministic kernels, fixed thread count).
Design notes and measured numbers: docs/zoo.md.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .data import mini
from .data.batching import step_indices

ZOO_FORMAT_VERSION = 2  # 2: zoo v2 (task-specific domains, stronger pre-training, small task vectors)
MANIFEST = "manifest.json"
BUILDING_MARKER = ".zoo_building"  # present while a build writes into the directory
SPLITS = ("train", "validation", "test")
BUILD_THREADS = 1  # fixed intra-op threads (results depend on the reduction order); 1 is also fastest on a shared 2-core box

# Mini-scale defaults of the merge methods on zoo v2, chosen on the VALIDATION split of the seed-0 zoo by the probes in
# benchmarks/zoo_v2/probe.py (method seed 0; every run and its accuracy curve: docs/zoo_probes_v2/methods.jsonl, table in
# docs/zoo.md "Zoo v2"). Task arithmetic: best lambda of the path (0.3, as in the paper). TIES: best of lambda
# {0.3, 0.5, 0.7, 1.0} x density 0.2, then density {0.1, 0.3} at 0.5. Concrete TA keeps the paper's lambda 0.3; lr
# 1e-2 beat 3e-3 and was still rising at 400 steps. Layer-wise AdaMerging lr 1e-3 peaked at 200 steps (lr 3e-3 x 400
# was 0.25 higher, within the ±0.7 noise of the average; not taken, so that Concrete AdaMerging's TTA stage is the
# same optimisation as the AdaMerging it is compared with). Concrete AdaMerging: outer lr 1e-3 beat 1e-2.
MINI_DEFAULTS: dict[str, dict[str, Any]] = {
    "task_arithmetic": {"scaling": 0.3},
    "ties_merging": {"scaling": 0.5, "density": 0.2},
    "concrete_task_arithmetic": {"scaling": 0.3, "lr": 1e-2, "steps": 400},
    "layer_wise_adamerging": {"lr": 1e-3, "steps": 200},
    "layer_wise_concrete_adamerging": {"outer_lr": 1e-3, "meta_steps": 200, "tta_lr": 1e-3, "tta_steps": 200},
}

_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
for _k, _v in _OFFLINE_ENV.items():
    os.environ.setdefault(_k, _v)


# ------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class MiniConfig:
    """Sizes and hyper-parameters of a mini zoo build (everything that changes the result)."""

    tasks: tuple[str, ...] = mini.TASK_NAMES
    sizes: mini.SplitSizes = mini.SplitSizes()
    pretrain_per_task: int = 8000  # v2: 2x v1's pairs and 4x its steps (stronger features, docs/zoo.md "Zoo v2")
    pretrain_steps: int = 4800
    pretrain_batch: int = 128
    pretrain_lr: float = 2e-3
    finetune_steps: int = 1400  # v2: lower lr, longer -> small task vectors (||tau|| / ||theta0|| ~ 0.06 vs v1's 0.20)
    finetune_batch: int = 32
    finetune_lr: float = 3e-4
    weight_decay: float = 0.05
    vision_hidden: int = 96
    vision_layers: int = 4
    vision_heads: int = 4
    vision_mlp: int = 384
    patch_size: int = 7
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    projection_dim: int = 64
    max_text_len: int = 16
    logit_scale_init: float = math.log(20.0)
    logit_scale_max: float = math.log(100.0)
    ta_scaling: float = 0.3
    method_steps: dict = field(default_factory=dict)  # overrides of merge-method steps (smoke builds)
    precision: str = "fp32"  # "bf16": pre-training and fine-tuning forwards under bf16 autocast (weights stay fp32)
    domain_shift: bool = True  # v2: each task's images in its own domain (data/shifts.py), unseen in pre-training
    unnamed_classes: dict = field(default_factory=dict)  # v2: {task: class indices pre-training never shows}
    # v2 probe lever, off by default: {task: class indices shown in pre-training under a caption naming only the task}.
    # A third of the classes lowered zero-shot to 52.5 but made Concrete TA fall below task arithmetic (docs/zoo.md).
    generic_classes: dict = field(default_factory=dict)


def mini_config(smoke: bool = False, precision: str = "fp32") -> MiniConfig:
    """The full mini configuration, or a tiny one for CI (same code path, fewer images and steps)."""
    from .loop import check_precision

    check_precision(precision)
    if not smoke:
        return MiniConfig(precision=precision)
    return MiniConfig(sizes=mini.SplitSizes(train=200, validation=60, test=100), pretrain_per_task=150,
                      pretrain_steps=30, pretrain_batch=64, finetune_steps=12, finetune_batch=32,
                      method_steps={"steps": 2, "meta_steps": 2, "tta_steps": 2}, precision=precision)


def default_zoo_dir(seed: int = 0, smoke: bool = False, precision: str = "fp32") -> Path:
    """Cache location of a zoo: $CONCRETE_SUBSPACE_CACHE/zoo/... or ~/.cache/concrete_subspace/zoo/... (outside git).

    A bf16-built zoo gets its own directory (suffix ``-bf16``); the fp32 zoo keeps the plain name.
    """
    root = os.environ.get("CONCRETE_SUBSPACE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "concrete_subspace"
    suffix = ("-smoke" if smoke else "") + ("" if precision == "fp32" else f"-{precision}")
    return base / "zoo" / f"mini-v{ZOO_FORMAT_VERSION}-seed{seed}{suffix}"


# ------------------------------------------------------------------------------------------ determinism
@contextlib.contextmanager
def deterministic(threads: int = BUILD_THREADS) -> Iterator[None]:
    """Deterministic kernels and a fixed thread count inside the block; the previous settings are restored."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)


def _seeded_init(seed: int, build):
    """Run a module constructor (which draws from torch's global RNG) under a forked, seeded RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# ------------------------------------------------------------------------------------------ tokenizer etc.
def build_tokenizer(words: Sequence[str], max_len: int):
    """Word-level tokenizer (lower-case, whitespace) wrapped as a transformers fast tokenizer; <bos> ... <eos>."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = {w: i for i, w in enumerate(specials + [w for w in words if w not in specials])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=max_len)


def build_processor(tokenizer):
    """CLIPProcessor whose image part maps 28x28 RGB images to pixel values in [-1, 1] (see ``to_pixel_values``)."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    size = mini.IMAGE_SIZE
    image = CLIPImageProcessor(do_resize=True, size={"shortest_edge": size}, do_center_crop=True,
                               crop_size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return CLIPProcessor(image_processor=image, tokenizer=tokenizer)


def to_pixel_values(images: Tensor | np.ndarray) -> Tensor:
    """uint8 N x H x W x 3 images -> float N x 3 x H x W in [-1, 1] (identical to the saved CLIPProcessor)."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape N x H x W x 3, got {tuple(x.shape)} {x.dtype}")
    return (x.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5


def build_clip_config(cfg: MiniConfig, vocab_size: int):
    """The CLIPConfig of the mini model (vision ViT with 28x28 inputs, word-level text tower)."""
    from transformers import CLIPConfig

    text = dict(vocab_size=vocab_size, hidden_size=cfg.text_hidden, intermediate_size=2 * cfg.text_hidden,
                num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
                max_position_embeddings=cfg.max_text_len, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    vision = dict(hidden_size=cfg.vision_hidden, intermediate_size=cfg.vision_mlp, num_hidden_layers=cfg.vision_layers,
                  num_attention_heads=cfg.vision_heads, image_size=mini.IMAGE_SIZE, patch_size=cfg.patch_size, num_channels=3)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.projection_dim,
                      logit_scale_init_value=cfg.logit_scale_init)


# ---------------------------------------------------------------------------------------------- data
def generate_task_data(cfg: MiniConfig, seed: int, progress: bool = True) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """All task splits: {task: {split: (uint8 images, int64 labels)}}."""
    data = {}
    for task in tqdm(cfg.tasks, desc="zoo: task data", disable=not progress):
        data[task] = {s: mini.make_task_split(task, s, seed, cfg.sizes, cfg.domain_shift) for s in SPLITS}
    return data


def save_task_datasets(data: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], root: Path) -> None:
    """Save each task as a datasets.DatasetDict (uint8 image arrays + ClassLabel) under root/<task>."""
    import datasets

    for task, splits in data.items():
        names = list(mini.TASKS[task].classnames)
        features = datasets.Features({"image": datasets.Array3D(shape=(mini.IMAGE_SIZE, mini.IMAGE_SIZE, 3), dtype="uint8"),
                                      "label": datasets.ClassLabel(names=names)})
        dd = datasets.DatasetDict({s: datasets.Dataset.from_dict({"image": x, "label": y}, features=features)
                                   for s, (x, y) in splits.items()})
        dd.save_to_disk(str(root / task))


def load_task_split(zoo_dir: str | Path, task: str, split: str) -> tuple[Tensor, Tensor]:
    """(uint8 images N x 28 x 28 x 3, int64 labels) of one saved split."""
    import datasets

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(zoo_dir) / "datasets" / task
    if not path.exists():
        raise FileNotFoundError(f"zoo {zoo_dir} has no dataset for task {task!r} (expected {path})")
    ds = datasets.load_from_disk(str(path))[split].with_format("numpy")
    return torch.from_numpy(np.asarray(ds["image"], dtype=np.uint8)), torch.from_numpy(np.asarray(ds["label"], dtype=np.int64))


# ------------------------------------------------------------------------------------------- training
def _cosine_lr(step: int, total: int, base: float, warmup_frac: float = 0.05) -> float:
    """Linear warm-up then cosine decay to 0."""
    warm = max(1, int(warmup_frac * total))
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _autocast(precision: str) -> torch.autocast:
    """bf16 autocast of the build's forwards (CPU build) for ``precision="bf16"``; disabled for fp32."""
    from .loop import autocast

    return autocast(torch.device("cpu"), precision)


def _image_embeds(clip, pixel_values: Tensor) -> Tensor:
    return F.normalize(clip.visual_projection(clip.vision_model(pixel_values=pixel_values).pooler_output), dim=-1)


def _text_embeds(clip, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    pooled = clip.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    return F.normalize(clip.text_projection(pooled), dim=-1)


def pretrain(clip, tokenizer, images: np.ndarray, captions: Sequence[str], cfg: MiniConfig, seed: int,
             progress: bool = True) -> list[float]:
    """Contrastive image-caption pre-training (CLIP loss; identical captions in a batch count as positives)."""
    tokens = tokenizer(list(captions), padding="max_length", max_length=cfg.max_text_len, truncation=True, return_tensors="pt")
    _, caption_id = np.unique(np.asarray(captions), return_inverse=True)
    caption_id = torch.as_tensor(caption_id)
    x = torch.from_numpy(images)
    opt = torch.optim.AdamW(clip.parameters(), lr=cfg.pretrain_lr, weight_decay=cfg.weight_decay)
    clip.train()
    losses = []
    bar = tqdm(range(cfg.pretrain_steps), desc="zoo: pre-train CLIP", disable=not progress)
    for step in bar:
        idx = step_indices(len(x), cfg.pretrain_batch, step, seed)
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, cfg.pretrain_steps, cfg.pretrain_lr)
        with _autocast(cfg.precision):
            img = _image_embeds(clip, to_pixel_values(x[idx])).float()
            txt = _text_embeds(clip, tokens["input_ids"][idx], tokens["attention_mask"][idx]).float()
        logits = clip.logit_scale.exp() * img @ txt.T
        same = (caption_id[idx, None] == caption_id[None, idx]).float()
        target = same / same.sum(dim=1, keepdim=True)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0.0, cfg.logit_scale_max)
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", scale=f"{float(clip.logit_scale.detach().exp()):.1f}")
    clip.eval()
    return losses


def finetune(encoder, head: Tensor, images: Tensor, labels: Tensor, cfg: MiniConfig, seed: int, desc: str,
             progress: bool = True) -> list[float]:
    """Fine-tune the vision tower (in place) with cross-entropy against a frozen zero-shot head."""
    encoder.visual_projection.requires_grad_(False)
    params = [p for p in encoder.vision_model.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.finetune_lr, weight_decay=cfg.weight_decay)
    encoder.train()
    losses = []
    for step in tqdm(range(cfg.finetune_steps), desc=desc, disable=not progress, leave=False):
        idx = step_indices(len(labels), cfg.finetune_batch, step, seed)
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, cfg.finetune_steps, cfg.finetune_lr)
        with _autocast(cfg.precision):
            features = encoder(to_pixel_values(images[idx])).float()
        loss = F.cross_entropy(features @ head.T, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    encoder.eval().requires_grad_(False)
    return losses


# ------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def predict_logits(encoder, params: Mapping[str, Tensor] | None, head: Tensor, images: Tensor, batch: int = 500) -> Tensor:
    """Logits of a (possibly merged) encoder on uint8 images."""
    from .functional import forward

    out = [forward(encoder, params, to_pixel_values(images[i:i + batch])) @ head.T for i in range(0, len(images), batch)]
    return torch.cat(out)


def entropy_premise(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """Does low entropy go with correct predictions? Spearman(entropy, error), mean entropy of correct/wrong, AUROC."""
    from scipy.stats import spearmanr

    logp = logits.log_softmax(dim=-1)
    ent = -(logp.exp() * logp).sum(dim=-1).numpy()
    err = (logits.argmax(dim=-1) != labels).numpy().astype(np.float64)
    wrong, right = ent[err == 1], ent[err == 0]
    rho = float(spearmanr(ent, err).statistic) if 0 < err.sum() < len(err) else float("nan")
    # AUROC of entropy as an error detector = P(entropy of a wrong > entropy of a correct prediction)
    ranks = np.argsort(np.argsort(ent, kind="stable"), kind="stable") + 1.0
    auroc = float((ranks[err == 1].sum() - len(wrong) * (len(wrong) + 1) / 2) / (len(wrong) * len(right))) \
        if len(wrong) and len(right) else float("nan")
    return {"spearman_entropy_error": rho, "entropy_correct": float(right.mean()) if len(right) else float("nan"),
            "entropy_wrong": float(wrong.mean()) if len(wrong) else float("nan"), "entropy_mean": float(ent.mean()),
            "auroc_entropy_error": auroc, "accuracy": 100.0 * int((err == 0).sum()) / len(err)}


def _accuracy(logits: Tensor, labels: Tensor) -> float:
    """Percent correct, computed from integer counts (exactly reproducible)."""
    return 100.0 * int((logits.argmax(-1) == labels).sum()) / len(labels)


def _with_average(scores: Mapping[str, float]) -> dict[str, float]:
    out = dict(scores)
    out["average"] = float(np.mean(list(scores.values())))
    return out


# ------------------------------------------------------------------------------------------ files
def save_vision_model(vision_model, path: Path) -> None:
    """Save a CLIPVisionModel directory with "vision_model."-prefixed keys (the Hub / transformers 4 layout,
    which transformers 5 also loads), so libraries pinned to either major version read the same files."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    vision_model.config.save_pretrained(path)
    state = {f"vision_model.{k}": v.detach().contiguous() for k, v in vision_model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


def load_vision_state(path: Path, keys: Sequence[str], device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """The merged parameters (``keys``, "vision_model."-prefixed) of a saved CLIPVisionModel, either key layout."""
    from safetensors.torch import load_file

    file = path / "model.safetensors"
    if not file.exists():
        raise FileNotFoundError(f"no model.safetensors in {path}")
    state = load_file(str(file), device=str(device))
    state = {(k if k.startswith("vision_model.") else f"vision_model.{k}"): v for k, v in state.items()}
    missing = [k for k in keys if k not in state]
    if missing:
        raise KeyError(f"{file} lacks {len(missing)} of the merged keys, e.g. {missing[:3]}")
    return {k: state[k] for k in keys}


@contextlib.contextmanager
def quiet_library_bars() -> Iterator[None]:
    """Silence the datasets / transformers progress bars (ours show the stages), restoring them afterwards."""
    import datasets
    from transformers.utils import logging as hf_logging

    ds_on, hf_on = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if ds_on:
            datasets.enable_progress_bars()
        if hf_on:
            hf_logging.enable_progress_bar()


def _atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON to a temp file in the same directory, then os.replace it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, allow_nan=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_manifest(zoo_dir: str | Path) -> dict:
    """The zoo's manifest; a clear error if it is missing (incomplete build) or of another format version."""
    path = Path(zoo_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{zoo_dir} is not a complete mini zoo: {MANIFEST} is missing (interrupted build?); "
                                f"run `concrete-subspace zoo build` to (re)build it")
    manifest = json.loads(path.read_text())
    version = manifest.get("format_version")
    if version != ZOO_FORMAT_VERSION:
        raise ValueError(f"zoo {zoo_dir} has format_version {version!r}, this package reads {ZOO_FORMAT_VERSION}; rebuild it")
    return manifest


def _zoo_state(zoo_dir: Path, seed: int, smoke: bool, precision: str = "fp32") -> str:
    """'complete', 'missing', 'partial' (a build marker or zoo files, no valid manifest) or 'foreign' (other files)."""
    if not zoo_dir.exists() or not any(zoo_dir.iterdir()):
        return "missing"
    try:
        manifest = read_manifest(zoo_dir)
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        manifest = None
    built_precision = (manifest or {}).get("config", {}).get("precision", "fp32")  # zoos before the option: fp32
    if manifest is not None and manifest.get("seed") == seed and manifest.get("smoke") == smoke \
            and built_precision == precision and not (zoo_dir / BUILDING_MARKER).exists():
        return "complete"
    known = {"pretrained", "finetuned", "datasets", MANIFEST, BUILDING_MARKER}
    return "partial" if any(p.name in known for p in zoo_dir.iterdir()) else "foreign"


def _package_versions() -> dict[str, str]:
    import importlib.metadata as md

    names = ["torch", "transformers", "tokenizers", "datasets", "numpy", "scipy", "scikit-learn", "mlxtend", "pillow", "safetensors"]
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = "not installed"
    return out


# ------------------------------------------------------------------------------------------ build
def build_zoo(out_dir: str | Path | None = None, *, scale: str = "mini", seed: int = 0, smoke: bool = False,
              force: bool = False, progress: bool = True, methods: bool = True, precision: str = "fp32") -> Path:
    """Build (or reuse) the mini zoo; returns its directory. Partial or other-version zoos are rebuilt, never used.

    ``precision="bf16"`` trains under bf16 autocast (saved weights fp32; default directory suffixed ``-bf16``).
    """
    if scale != "mini":
        raise ValueError(f"build_zoo builds only the 'mini' scale (got {scale!r}); the paper scale uses Hub checkpoints")
    cfg = mini_config(smoke, precision)
    zoo_dir = Path(out_dir) if out_dir is not None else default_zoo_dir(seed, smoke, precision)
    state = _zoo_state(zoo_dir, seed, smoke, precision)
    if state == "complete" and not force:
        if methods and read_manifest(zoo_dir).get("methods_fingerprint") != _methods_fingerprint(cfg):
            print(f"zoo: reusing the complete cached zoo at {zoo_dir}; computing its merge-method results "
                  f"(missing or made with other MINI_DEFAULTS)")
            update_method_results(zoo_dir, progress=progress)
        else:
            print(f"zoo: reusing the complete cached zoo at {zoo_dir} (seed {seed}{', smoke' if smoke else ''}); --force rebuilds it")
        return zoo_dir
    if state == "foreign":
        raise FileExistsError(f"{zoo_dir} exists and holds files that are not a mini zoo; choose another --out or empty it")
    if state in ("partial", "complete"):
        why = "forced rebuild" if state == "complete" else "incomplete, interrupted, other-seed, -precision or -version zoo"
        print(f"zoo: {zoo_dir} holds an {why}; deleting and rebuilding it")
        shutil.rmtree(zoo_dir)
    zoo_dir.mkdir(parents=True, exist_ok=True)
    (zoo_dir / BUILDING_MARKER).write_text(f"build started {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n")
    with deterministic(), quiet_library_bars():
        manifest = _build(zoo_dir, cfg, seed, smoke, progress, methods)
    _atomic_write_json(zoo_dir / MANIFEST, manifest)
    (zoo_dir / BUILDING_MARKER).unlink()
    print(f"zoo: built {zoo_dir} in {manifest['build_seconds']['total']:.0f} s")
    return zoo_dir


def _build(zoo_dir: Path, cfg: MiniConfig, seed: int, smoke: bool, progress: bool, methods: bool) -> dict:
    """Every stage of a build; returns the manifest (the caller writes it last)."""
    from transformers import CLIPModel

    from .models.clip_hf import ImageEncoder, pretrained_state, zero_shot_head

    t_start = time.perf_counter()
    times: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        times[name] = round(time.perf_counter() - t0, 1)
        return time.perf_counter()

    t = time.perf_counter()
    data = generate_task_data(cfg, seed, progress)
    pre_x, pre_captions, _ = mini.make_pretraining_set(seed, cfg.pretrain_per_task, cfg.sizes, cfg.unnamed_classes,
                                                  cfg.generic_classes)
    save_task_datasets(data, zoo_dir / "datasets")
    t = lap("data", t)

    tokenizer = build_tokenizer(mini.vocabulary(), cfg.max_text_len)
    processor = build_processor(tokenizer)
    config = build_clip_config(cfg, len(tokenizer))
    clip = _seeded_init(seed, lambda: CLIPModel(config))
    pretrain_losses = pretrain(clip, tokenizer, pre_x, pre_captions, cfg, seed, progress)
    clip.save_pretrained(zoo_dir / "pretrained")
    processor.save_pretrained(zoo_dir / "pretrained")
    t = lap("pretrain", t)

    heads = {task: zero_shot_head(clip, tokenizer, mini.TASKS[task].classnames, mini.TASKS[task].templates) for task in cfg.tasks}
    encoder = ImageEncoder.from_clip(clip).eval().requires_grad_(False)
    theta0 = {k: v.clone() for k, v in pretrained_state(encoder).items()}
    finetuned, finetune_losses = {}, {}
    for i, task in enumerate(tqdm(cfg.tasks, desc="zoo: fine-tune experts", disable=not progress)):
        expert = copy.deepcopy(encoder)
        x, y = data[task]["train"]
        finetune_losses[task] = finetune(expert, heads[task], torch.from_numpy(x), torch.from_numpy(y), cfg,
                                         seed * 100 + i, f"fine-tune {task}", progress)
        save_vision_model(expert.vision_model, zoo_dir / "finetuned" / task)
        finetuned[task] = {k: v.detach().clone() for k, v in pretrained_state(expert).items()}
    t = lap("finetune", t)

    accuracy, premise = _evaluate_zoo(encoder, theta0, finetuned, heads, data, cfg, progress)
    t = lap("evaluate", t)
    geometry = _geometry(encoder, theta0, finetuned, heads, data, accuracy, seed)
    t = lap("geometry", t)
    manifest = _manifest(cfg, seed, smoke, tokenizer, clip, accuracy, premise, pretrain_losses, finetune_losses, times)
    manifest["geometry"] = geometry
    if methods:
        manifest["methods"] = _method_results(zoo_dir, manifest, cfg, seed, progress)
        manifest["methods_fingerprint"] = _methods_fingerprint(cfg)
        t = lap("methods", t)
    times["total"] = round(time.perf_counter() - t_start, 1)
    manifest["build_seconds"] = times
    return manifest


def _evaluate_zoo(encoder, theta0, finetuned, heads, data, cfg: MiniConfig, progress: bool):
    """Zero-shot, individual and task-arithmetic accuracy per split, and the entropy premise on the TA model."""
    ta = {k: theta0[k] + cfg.ta_scaling * sum(finetuned[t][k] - theta0[k] for t in cfg.tasks) for k in theta0}
    accuracy = {s: {"zero_shot": {}, "individual": {}, "task_arithmetic": {}} for s in ("validation", "test")}
    premise = {s: {} for s in ("validation", "test")}
    for task in tqdm(cfg.tasks, desc="zoo: evaluate", disable=not progress):
        for split in ("validation", "test"):
            x, y = (torch.from_numpy(a) for a in data[task][split])
            accuracy[split]["zero_shot"][task] = _accuracy(predict_logits(encoder, theta0, heads[task], x), y)
            accuracy[split]["individual"][task] = _accuracy(predict_logits(encoder, finetuned[task], heads[task], x), y)
            ta_logits = predict_logits(encoder, ta, heads[task], x)
            accuracy[split]["task_arithmetic"][task] = _accuracy(ta_logits, y)
            premise[split][task] = entropy_premise(ta_logits, y)
    accuracy = {s: {m: _with_average(v) for m, v in d.items()} for s, d in accuracy.items()}
    for s in premise:
        premise[s]["average"] = {k: float(np.nanmean([premise[s][t][k] for t in cfg.tasks])) for k in premise[s][cfg.tasks[0]]}
    return accuracy, premise


@torch.no_grad()
def _embed(encoder, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """Normalised image embeddings of the (pre-trained) encoder for uint8 images."""
    x = torch.from_numpy(images)
    return torch.cat([encoder(to_pixel_values(x[i:i + batch])) for i in range(0, len(x), batch)]).numpy()


def _geometry(encoder, theta0, finetuned, heads, data, accuracy, seed: int, probe_train: int = 3000) -> dict:
    """The manifest's "geometry" (concrete_subspace.geometry): linear probe vs zero-shot of theta0, task-vector norms and
    cosines, cross-transfer (validation), and the task-arithmetic path with its entropy premise (validation and test)."""
    from . import geometry

    def predict(params, task, x):
        return predict_logits(encoder, params, heads[task], x)

    probe = {}
    for task in finetuned:
        (xtr, ytr), (xva, yva), (xte, yte) = (data[task][s] for s in SPLITS)
        keep = mini.derive_rng(seed, task, "probe").permutation(len(ytr))[:probe_train]
        probe[task] = geometry.linear_probe((_embed(encoder, xtr[keep]), ytr[keep]), (_embed(encoder, xva), yva),
                                            (_embed(encoder, xte), yte))
    probe["average"] = {s: float(np.mean([probe[t][s] for t in finetuned])) for s in ("validation", "test")}
    tensors = {s: {t: tuple(torch.from_numpy(a) for a in data[t][s]) for t in finetuned} for s in ("validation", "test")}
    paths = {s: geometry.ta_path(predict, theta0, finetuned, tensors[s]) for s in tensors}
    cross = geometry.cross_transfer(predict, theta0, finetuned, tensors["validation"], accuracy["validation"]["zero_shot"])
    return {"linear_probe": probe, "task_vectors": geometry.task_vector_geometry(theta0, finetuned),
            "cross_transfer": {"split": "validation", "scaling": 0.3, "matrix": cross, **geometry.cross_summary(cross)},
            "ta_path": paths, "entropy_premise_along_lambda": {s: geometry.entropy_premise_holds(p) for s, p in paths.items()}}


def _manifest(cfg, seed, smoke, tokenizer, clip, accuracy, premise, pretrain_losses, finetune_losses, times) -> dict:
    """Everything a user needs to know about the zoo, JSON-ready."""
    tasks = {}
    for task in cfg.tasks:
        spec = mini.TASKS[task]
        tasks[task] = {"classnames": list(spec.classnames), "templates": list(spec.templates), "source": spec.source,
                       "licence": mini.LICENCES[task], "corruption_level": spec.level,
                       "chance": round(100.0 / len(spec.classnames), 2)}
    n_params = sum(p.numel() for p in clip.vision_model.parameters())
    return {
        "format_version": ZOO_FORMAT_VERSION, "scale": "mini", "seed": seed, "smoke": smoke,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "task_names": list(cfg.tasks), "tasks": tasks,
        "config": {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in cfg.__dict__.items()},
        "model": {"vision_params": n_params, "logit_scale": float(clip.logit_scale.detach().exp()), "vocab_size": len(tokenizer),
                  "image_size": mini.IMAGE_SIZE},
        "layout": {"pretrained": "pretrained", "finetuned": {t: f"finetuned/{t}" for t in cfg.tasks},
                   "datasets": {t: f"datasets/{t}" for t in cfg.tasks}},
        "accuracy": accuracy,  # percent; {split: {zero_shot|individual|task_arithmetic: {task: acc, average}}}
        "entropy_premise": premise,  # on the task-arithmetic model (lambda = cfg.ta_scaling)
        "training": {"pretrain_loss_first_last": [round(float(np.mean(pretrain_losses[:10])), 4),
                                                  round(float(np.mean(pretrain_losses[-20:])), 4)],
                     "finetune_loss_last": {t: round(float(np.mean(v[-10:])), 4) for t, v in finetune_losses.items()}},
        "versions": _package_versions(), "threads": BUILD_THREADS, "build_seconds": dict(times),
    }


def _methods_fingerprint(cfg: MiniConfig) -> dict:
    """What the merge-method results depend on beyond the zoo itself (JSON-comparable)."""
    return json.loads(json.dumps({"defaults": MINI_DEFAULTS, "overrides": cfg.method_steps}))


def update_method_results(zoo_dir: str | Path, *, progress: bool = True) -> dict:
    """(Re)compute the test-split merge-method results of a complete zoo at MINI_DEFAULTS; rewrites the manifest atomically."""
    zoo_dir = Path(zoo_dir)
    manifest = read_manifest(zoo_dir)
    cfg = mini_config(manifest["smoke"])
    t0 = time.perf_counter()
    with deterministic(), quiet_library_bars():
        manifest["methods"] = _method_results(zoo_dir, manifest, cfg, manifest["seed"], progress)
    manifest["methods_fingerprint"] = _methods_fingerprint(cfg)
    manifest.setdefault("build_seconds", {})["methods"] = round(time.perf_counter() - t0, 1)
    _atomic_write_json(zoo_dir / MANIFEST, manifest)
    return manifest


def _method_results(zoo_dir: Path, manifest: dict, cfg: MiniConfig, seed: int, progress: bool) -> dict:
    """Test-split results of the core merge methods at MINI_DEFAULTS (skipped, with a note, if unavailable)."""
    try:
        from .merging import run_method
        from .evaluation import evaluate
    except ImportError as err:  # the core is developed in parallel; the zoo is usable without these numbers
        return {"skipped": f"concrete_subspace.merging not importable: {err}"}
    problem = _problem_from(zoo_dir, manifest, tasks=None, split="test", batch_size=16, seed=seed, device="cpu")
    out = {}
    for name in ("task_arithmetic", "ties_merging", "concrete_task_arithmetic", "layer_wise_adamerging",
                 "layer_wise_concrete_adamerging"):
        params = dict(MINI_DEFAULTS.get(name, {}))
        params.update({k: v for k, v in cfg.method_steps.items() if k in _method_param_names(name)})
        t0 = time.perf_counter()
        if "progress" in _method_param_names(name):
            params["progress"] = progress
        try:
            result = run_method(name, problem, **params)
        except Exception as err:  # record and continue: one broken method must not lose a 15-minute build
            out[name] = {"error": f"{type(err).__name__}: {err}"}
            continue
        scores = evaluate(problem, result.state)
        out[name] = {"params": {k: v for k, v in result.params.items() if _json_scalar(v)}, "test": _with_average(scores),
                     "seconds": round(time.perf_counter() - t0, 1)}
        if progress:
            print(f"zoo: {name}: test average {out[name]['test']['average']:.1f}")
    return out


def _json_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _method_param_names(name: str) -> set[str]:
    from .merging import get_method

    return set(get_method(name).defaults)


# ------------------------------------------------------------------------------------------ loading
def load_zoo_problem(zoo_dir: str | Path, *, tasks: Sequence[str] | None = None, split: str = "test", batch_size: int = 16,
                     seed: int = 0, device: str | torch.device = "cpu"):
    """The zoo as a MergeProblem: TTA batches and evaluation from ``split`` (as in the paper), train for Fisher/RegMean."""
    return _problem_from(Path(zoo_dir), read_manifest(zoo_dir), tasks=tasks, split=split, batch_size=batch_size,
                         seed=seed, device=device)


def select_tasks(manifest: dict, tasks: Sequence[str] | None, split: str, zoo: str = "zoo") -> tuple[list[str], list[str]]:
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

    from .models.clip_hf import ImageEncoder, build_clip_problem, merge_keys, zero_shot_head

    tasks, known = select_tasks(manifest, tasks, split)
    device = torch.device(device)
    with quiet_library_bars():
        clip = CLIPModel.from_pretrained(zoo_dir / "pretrained").to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(zoo_dir / "pretrained")
    heads = {t: zero_shot_head(clip, tokenizer, manifest["tasks"][t]["classnames"], manifest["tasks"][t]["templates"], device)
             for t in tasks}
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
    return build_clip_problem(encoder, heads, load_finetuned, unlabeled, evaluation, batch_size=batch_size, seed=seed,
                              train=train, transform=lambda x: to_pixel_values(x).to(device),
                              info={"zoo_dir": str(zoo_dir), "split": split, "manifest": str(zoo_dir / MANIFEST),
                                    "seed": manifest["seed"], "scale": "mini"})
