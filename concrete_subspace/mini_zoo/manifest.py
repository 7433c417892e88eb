"""The zoo's manifest: reading it, the state of a zoo directory, and the manifest a build writes."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..data import mini
from .config import BUILD_THREADS, BUILDING_MARKER, MANIFEST, ZOO_FORMAT_VERSION


def read_manifest(zoo_dir: str | Path) -> dict:
    """The zoo's manifest; a clear error if it is missing (incomplete build) or of another format version."""
    path = Path(zoo_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(
            f"{zoo_dir} is not a complete mini zoo: {MANIFEST} is missing (interrupted build?); "
            f"run `concrete-subspace zoo build` to (re)build it"
        )
    manifest = json.loads(path.read_text())
    version = manifest.get("format_version")
    if version != ZOO_FORMAT_VERSION:
        raise ValueError(
            f"zoo {zoo_dir} has format_version {version!r}, this package reads {ZOO_FORMAT_VERSION}; rebuild it"
        )
    return manifest


def zoo_state(zoo_dir: Path, seed: int, smoke: bool, precision: str = "fp32") -> str:
    """'complete', 'missing', 'partial' (a build marker or zoo files, no valid manifest) or 'foreign' (other files)."""
    if not zoo_dir.exists() or not any(zoo_dir.iterdir()):
        return "missing"
    try:
        manifest = read_manifest(zoo_dir)
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        manifest = None
    built_precision = (manifest or {}).get("config", {}).get("precision", "fp32")  # zoos before the option: fp32
    if (
        manifest is not None
        and manifest.get("seed") == seed
        and manifest.get("smoke") == smoke
        and built_precision == precision
        and not (zoo_dir / BUILDING_MARKER).exists()
    ):
        return "complete"
    known = {"pretrained", "finetuned", "datasets", MANIFEST, BUILDING_MARKER}
    return "partial" if any(p.name in known for p in zoo_dir.iterdir()) else "foreign"


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    names = [
        "torch",
        "transformers",
        "tokenizers",
        "datasets",
        "numpy",
        "scipy",
        "scikit-learn",
        "mlxtend",
        "pillow",
        "safetensors",
    ]
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = "not installed"
    return out


def zoo_manifest(cfg, seed, smoke, tokenizer, clip, accuracy, premise, pretrain_losses, finetune_losses, times) -> dict:
    """Everything a user needs to know about the zoo, JSON-ready."""
    tasks = {}
    for task in cfg.tasks:
        spec = mini.TASKS[task]
        tasks[task] = {
            "classnames": list(spec.classnames),
            "templates": list(spec.templates),
            "source": spec.source,
            "licence": mini.LICENCES[task],
            "corruption_level": spec.level,
            "chance": round(100.0 / len(spec.classnames), 2),
        }
    n_params = sum(p.numel() for p in clip.vision_model.parameters())
    return {
        "format_version": ZOO_FORMAT_VERSION,
        "scale": "mini",
        "seed": seed,
        "smoke": smoke,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "task_names": list(cfg.tasks),
        "tasks": tasks,
        "config": {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in cfg.__dict__.items()},
        "model": {
            "vision_params": n_params,
            "logit_scale": float(clip.logit_scale.detach().exp()),
            "vocab_size": len(tokenizer),
            "image_size": mini.IMAGE_SIZE,
        },
        "layout": {
            "pretrained": "pretrained",
            "finetuned": {t: f"finetuned/{t}" for t in cfg.tasks},
            "datasets": {t: f"datasets/{t}" for t in cfg.tasks},
        },
        "accuracy": accuracy,  # percent; {split: {zero_shot|individual|task_arithmetic: {task: acc, average}}}
        "entropy_premise": premise,  # on the task-arithmetic model (lambda = cfg.ta_scaling)
        "training": {
            "pretrain_loss_first_last": [
                round(float(np.mean(pretrain_losses[:10])), 4),
                round(float(np.mean(pretrain_losses[-20:])), 4),
            ],
            "finetune_loss_last": {t: round(float(np.mean(v[-10:])), 4) for t, v in finetune_losses.items()},
        },
        "versions": package_versions(),
        "threads": BUILD_THREADS,
        "build_seconds": dict(times),
    }
