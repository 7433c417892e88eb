"""Merge your own fine-tuned CLIP models on your own image folders: one config, one call, one output directory.

The user has a pre-trained CLIP (a Hugging Face ``CLIPModel`` directory, or an open_clip checkpoint file with
``models.open_clip_arch``, converted by :mod:`.models.open_clip_hf`), one fine-tuned checkpoint per task (HF
directory, ``.safetensors`` or ``.pt``; a ``CLIPVisionModel``, a full ``CLIPModel`` or an open_clip image encoder)
and, per task, a folder of unlabeled images plus its class names: a text file (one name a line), or the sub-folder names of an
``ImageFolder``-style labeled folder, which then also gives an accuracy report. This module turns that into a
:class:`~concrete_subspace.problem.MergeProblem` with the library's own CLIP adapter
(:func:`~concrete_subspace.models.clip_hf.build_clip_problem`, :func:`~concrete_subspace.models.clip_hf.zero_shot_head`)
and runs any registry method on it with :func:`~concrete_subspace.registry.run_method` - no loop of its own.

Output (moved into place only when complete): the merged ``CLIPModel`` directory (``from_pretrained`` loads it),
``mask.safetensors`` for the Concrete methods, and ``report.json`` (resolved parameters, entropy along the run,
per-task accuracy where labels exist, versions). An interrupted run resumes from ``.<out>.resume-<digest>``
beside the output, the methods' own checkpoint directory. See docs/merge_your_own.md.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

TOP_KEYS = (
    "models",
    "tasks",
    "method",
    "params",
    "out",
    "templates",
    "seed",
    "batch_size",
    "device",
    "max_image_pixels",
)
MODEL_KEYS = ("pretrained", "finetuned", "open_clip_arch")
OPEN_CLIP_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")  # a file as models.pretrained: an open_clip CLIP
TASK_KEYS = ("images", "classnames", "templates")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DEFAULT_TEMPLATES = ("a photo of a {}.",)  # CLIP's generic prompt, for tasks the package has no templates for
NEEDS_TRAIN_LABELS = ("fisher_merging", "regmean")  # trained on labeled data, not test-time methods
MAX_IMAGE_PIXELS = 50_000_000  # larger images are refused (decompression bombs), smaller ones resized
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    *PROCESSOR_FILES,
)


class OwnModelsError(ValueError):
    """Bad user input (config, checkpoint or image folder): one line naming the problem; nothing is written."""


@dataclass(frozen=True)
class TaskSpec:
    """One task: its fine-tuned checkpoint, its image folder, class names and prompt templates."""

    name: str
    checkpoint: Path
    images: Path
    classnames: Path | None = None
    templates: Path | None = None


@dataclass(frozen=True)
class MergeConfig:
    """A checked merge config: paths are absolute, names known, every task has a checkpoint and data."""

    pretrained: Path
    tasks: tuple[TaskSpec, ...]
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    templates: Path | None = None
    seed: int = 0
    batch_size: int = 16
    device: str = "cpu"
    max_image_pixels: int = MAX_IMAGE_PIXELS
    out: Path | None = None
    open_clip_arch: str | None = None  # set when ``pretrained`` is an open_clip checkpoint file


# ------------------------------------------------------------------------------------------------------ config
def _did_you_mean(key: str, valid: Sequence[str]) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(valid)}"


def check_keys(mapping: Mapping, valid: Sequence[str], where: str) -> None:
    """Refuse a key that does not exist (a typo would otherwise be silently ignored), with a suggestion."""
    if not isinstance(mapping, Mapping):
        raise OwnModelsError(f"{where} must be a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if key not in valid:
            raise OwnModelsError(f"unknown key {key!r} in {where}{_did_you_mean(str(key), valid)}")


def read_yaml(path: str | os.PathLike) -> dict:
    """The YAML file as a dict; a key given twice in one mapping (e.g. a duplicate task name) is an error."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise OwnModelsError(f"{path}: key {key!r} is given twice (line {key_node.start_mark.line + 1})")
                seen.add(key)
            return super().construct_mapping(node, deep)

    path = Path(path)
    if not path.is_file():
        raise OwnModelsError(f"no such config file: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise OwnModelsError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise OwnModelsError(f"{path}: expected a mapping of settings at the top level")
    return data


def _path(value: Any, base: Path, where: str) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise OwnModelsError(f"{where} must be a path, got {value!r}")
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else base / path


def _int(raw: Mapping, key: str, default: int, minimum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OwnModelsError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def check_config(raw: Mapping, base: str | os.PathLike = ".") -> MergeConfig:
    """A :class:`MergeConfig` from a config mapping (relative paths are relative to ``base``), or a one-line error.

    Checks: every key exists; the method is registered and its parameters known (types are checked by
    :func:`~concrete_subspace.registry.run_method`); every task has a checkpoint and every checkpoint a task;
    every path exists.
    """
    from .registry import UnknownMethodError, get_method, resolve_params

    base = Path(base)
    check_keys(raw, TOP_KEYS, "the config")
    for key in ("models", "tasks", "method"):
        if key not in raw:
            raise OwnModelsError(f"the config has no {key!r} key")
    models, tasks = raw["models"], raw["tasks"]
    check_keys(models, MODEL_KEYS, "models")
    if "pretrained" not in models:
        raise OwnModelsError("models has no 'pretrained' key (the pre-trained CLIPModel directory)")
    finetuned = models.get("finetuned") or {}
    if not isinstance(finetuned, Mapping):
        raise OwnModelsError("models.finetuned must be a mapping: task name -> fine-tuned checkpoint")
    if not isinstance(tasks, Mapping) or not tasks:
        raise OwnModelsError("tasks must be a non-empty mapping: task name -> {images: ..., classnames: ...}")
    for name in tasks:
        if name not in finetuned:
            raise OwnModelsError(f"task {name!r} has no fine-tuned checkpoint under models.finetuned")
    for name in finetuned:
        if name not in tasks:
            raise OwnModelsError(f"models.finetuned names {name!r}, which is not a task under tasks")
    try:
        spec = get_method(str(raw["method"]))
        if not isinstance(raw.get("params") or {}, Mapping):
            raise OwnModelsError("params must be a mapping: parameter name -> value")
        params = dict(raw.get("params") or {})
        resolve_params(spec.name, params)
    except UnknownMethodError as err:
        raise OwnModelsError(str(err)) from None
    specs = []
    for name, entry in tasks.items():
        entry = entry or {}
        check_keys(entry, TASK_KEYS, f"tasks.{name}")
        if "images" not in entry:
            raise OwnModelsError(f"tasks.{name} has no 'images' folder")
        specs.append(
            TaskSpec(
                name=str(name),
                checkpoint=_path(finetuned[name], base, f"models.finetuned.{name}"),
                images=_path(entry["images"], base, f"tasks.{name}.images"),
                classnames=_path(entry["classnames"], base, f"tasks.{name}.classnames")
                if "classnames" in entry
                else None,
                templates=_path(entry["templates"], base, f"tasks.{name}.templates") if "templates" in entry else None,
            )
        )
    config = MergeConfig(
        pretrained=_path(models["pretrained"], base, "models.pretrained"),
        tasks=tuple(specs),
        method=spec.name,
        params=params,
        templates=_path(raw["templates"], base, "templates") if raw.get("templates") else None,
        seed=_int(raw, "seed", 0, 0),
        batch_size=_int(raw, "batch_size", 16, 1),
        device=str(raw.get("device", "cpu")),
        max_image_pixels=_int(raw, "max_image_pixels", MAX_IMAGE_PIXELS, 1),
        out=_path(raw["out"], base, "out") if raw.get("out") else None,
        open_clip_arch=open_clip_arch(models),
    )
    check_paths(config)
    return config


def open_clip_arch(models: Mapping) -> str | None:
    """``models.open_clip_arch``, required exactly when ``models.pretrained`` is a checkpoint file (open_clip).

    Why a name and not only the weights: the activation (QuickGELU for OpenAI's weights, e.g. ``ViT-B-32-quickgelu``,
    GELU for ``ViT-B-32``) is not visible in a state dict, and a wrong one changes every feature silently.
    """
    is_file = str(models["pretrained"]).endswith(OPEN_CLIP_SUFFIXES)
    arch = models.get("open_clip_arch")
    if is_file and not arch:
        raise OwnModelsError(
            "models.pretrained is a checkpoint file, i.e. an open_clip CLIP: give its architecture as "
            "models.open_clip_arch (e.g. ViT-B-32-quickgelu for OpenAI's weights, as in the paper)"
        )
    if arch and not is_file:
        raise OwnModelsError(
            f"models.open_clip_arch is for an open_clip checkpoint file ({', '.join(OPEN_CLIP_SUFFIXES)}), "
            f"but models.pretrained is {models['pretrained']!r}"
        )
    if arch is not None and not isinstance(arch, str):
        raise OwnModelsError(f"models.open_clip_arch must be an open_clip model name, got {arch!r}")
    return arch


def check_paths(config: MergeConfig) -> None:
    """Every file and folder the config names exists (the first missing one is named)."""
    if config.open_clip_arch is not None:
        if not config.pretrained.is_file():
            raise OwnModelsError(f"models.pretrained: no such open_clip checkpoint file {config.pretrained}")
    elif not (config.pretrained / "config.json").is_file():
        raise OwnModelsError(
            f"models.pretrained {config.pretrained} is not a Hugging Face CLIPModel directory (no config.json)"
        )
    for task in config.tasks:
        if not task.checkpoint.exists():
            raise OwnModelsError(f"task {task.name!r}: no such checkpoint {task.checkpoint}")
        if not task.images.is_dir():
            raise OwnModelsError(f"task {task.name!r}: no such image folder {task.images}")
        for what, path in (("classnames", task.classnames), ("templates", task.templates)):
            if path is not None and not path.is_file():
                raise OwnModelsError(f"task {task.name!r}: no such {what} file {path}")
    if config.templates is not None and not config.templates.is_file():
        raise OwnModelsError(f"no such templates file {config.templates}")


# ------------------------------------------------------------------------------------------------ image folders
def read_lines(path: Path, what: str) -> list[str]:
    """Non-empty, stripped lines of a text file (class names or templates); an empty file is an error."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise OwnModelsError(f"{what} file {path} is empty")
    if len(set(lines)) != len(lines):
        dup = next(x for x in lines if lines.count(x) > 1)
        raise OwnModelsError(f"{what} file {path} lists {dup!r} twice")
    return lines


def read_templates(path: Path) -> list[str]:
    """Prompt templates, one a line, each with one ``{}`` for the class name."""
    lines = read_lines(path, "templates")
    for line in lines:
        if line.count("{}") != 1:
            raise OwnModelsError(f"templates file {path}: {line!r} needs exactly one '{{}}' for the class name")
    return lines


def task_templates(task: TaskSpec, default_file: Path | None) -> list[str]:
    """The task's own templates file, else the config's, else the package's templates for a known task name."""
    from .models.templates import TEMPLATE_STRINGS

    for path in (task.templates, default_file):
        if path is not None:
            return read_templates(path)
    return list(TEMPLATE_STRINGS.get(task.name, DEFAULT_TEMPLATES))


def list_image_folder(folder: Path) -> tuple[list[Path], list[str] | None]:
    """(image files, class sub-folder names or None) of a flat unlabeled folder or an ImageFolder-style one.

    Files are ordered by file name (then sub-folder), so numbered names fix the order the test-time batches see.
    """
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    roots = subdirs or [folder]
    files = [
        p
        for root in roots
        for p in root.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise OwnModelsError(f"image folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
    files.sort(key=lambda p: (p.name, str(p)))
    return files, ([p.name for p in subdirs] if subdirs else None)


def to_rgb_array(image, path: Path) -> np.ndarray:
    """A PIL image as uint8 H x W x 3: grayscale and palette converted, alpha dropped, 16-bit scaled to 8-bit."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        gray = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "F":
        raise OwnModelsError(f"image {path}: floating-point images (mode 'F') are not supported; save as 8-bit")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def resize_and_crop(array: np.ndarray, edge: int, crop: tuple[int, int]) -> np.ndarray:
    """CLIP's preprocessing geometry: shortest side to ``edge`` (bicubic, skipped when already so), centre crop."""
    from PIL import Image

    height, width = array.shape[:2]
    if min(height, width) != edge:
        scale = edge / min(height, width)
        size = (max(edge, round(width * scale)), max(edge, round(height * scale)))
        array = np.asarray(Image.fromarray(array).resize(size, Image.BICUBIC))
    height, width = array.shape[:2]
    top, left = (height - crop[0]) // 2, (width - crop[1]) // 2
    if top < 0 or left < 0:
        raise OwnModelsError(f"image of {height}x{width} is smaller than the crop {crop} after resizing")
    return np.ascontiguousarray(array[top : top + crop[0], left : left + crop[1]])


def read_image(path: Path, edge: int, crop: tuple[int, int], max_pixels: int) -> np.ndarray:
    """One image file as uint8 crop_h x crop_w x 3; unreadable, truncated or too-large files are refused."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.width * image.height > max_pixels:
                raise OwnModelsError(
                    f"image {path} has {image.width}x{image.height} pixels, above max_image_pixels={max_pixels}"
                )
            image.load()
            array = to_rgb_array(image, path)
    except OwnModelsError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise OwnModelsError(f"image {path} cannot be read: {str(err).splitlines()[0] or type(err).__name__}") from None
    return resize_and_crop(array, edge, crop)


def task_data(
    task: TaskSpec, geometry: dict, max_pixels: int, progress: bool = False
) -> tuple[Tensor, Tensor | None, list[str]]:
    """(uint8 images N x H x W x 3, labels or None, class names) of one task's folder.

    A labeled folder's classes are its sub-folder names, in the order of the ``classnames`` file when one is
    given (which must list exactly those names), else sorted.
    """
    from tqdm.auto import tqdm

    files, folders = list_image_folder(task.images)
    names = read_lines(task.classnames, "classnames") if task.classnames is not None else None
    if folders is None and names is None:
        raise OwnModelsError(
            f"task {task.name!r}: {task.images} has no class sub-folders, so it needs a 'classnames' file"
        )
    if folders is not None and names is not None and sorted(names) != sorted(folders):
        extra, missing = sorted(set(names) - set(folders)), sorted(set(folders) - set(names))
        raise OwnModelsError(
            f"task {task.name!r}: classnames {task.classnames} does not match the sub-folders of {task.images} "
            f"(only in the file: {extra}; only as folders: {missing})"
        )
    names = names or folders
    images = [
        read_image(p, geometry["edge"], geometry["crop"], max_pixels)
        for p in tqdm(files, desc=f"read {task.name}", disable=not progress, leave=False)
    ]
    labels = torch.tensor([names.index(p.parent.name) for p in files]) if folders is not None else None
    return torch.from_numpy(np.stack(images)), labels, names


# ------------------------------------------------------------------------------------------------------ model
def image_geometry(pretrained: Path, image_size: int) -> dict:
    """Resize edge, crop, mean, std and rescale divisor from the saved CLIP processor (OpenAI CLIP's if none)."""
    processor: dict = {}
    for name in PROCESSOR_FILES:
        if (pretrained / name).is_file():
            data = json.loads((pretrained / name).read_text())
            processor = data.get("image_processor", data)
            break
    crop = processor.get("crop_size", {"height": image_size, "width": image_size})
    crop = (crop, crop) if isinstance(crop, int) else (int(crop["height"]), int(crop["width"]))
    size = processor.get("size", {"shortest_edge": image_size})
    edge = size if isinstance(size, int) else int(size.get("shortest_edge", min(crop)))
    factor = float(processor.get("rescale_factor", 1 / 255))
    divisor = float(round(1 / factor)) if abs(1 / factor - round(1 / factor)) < 1e-6 else 1 / factor
    return {
        "edge": edge,
        "crop": crop,
        "mean": processor.get("image_mean", [0.48145466, 0.4578275, 0.40821073]),
        "std": processor.get("image_std", [0.26862954, 0.26130258, 0.27577711]),
        "divisor": divisor,
    }


def pixel_transform(geometry: dict, device: torch.device) -> Callable[[Tensor], Tensor]:
    """uint8 N x H x W x 3 -> normalised float N x 3 x H x W, as the CLIP processor does."""
    mean = torch.tensor(geometry["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(geometry["std"]).view(1, 3, 1, 1)

    def transform(images: Tensor) -> Tensor:
        x = images.permute(0, 3, 1, 2).float() / geometry["divisor"]
        return ((x - mean) / std).to(device)

    return transform


def vision_state(path: Path, keys: Sequence[str], task: str) -> dict[str, Tensor]:
    """The merged tensors (``vision_model.*``) of a fine-tuned checkpoint, any format: a CLIPVisionModel or CLIPModel,
    or an open_clip image encoder (``[model.]visual.*`` keys, the paper's task_vectors layout), converted."""
    from .models.open_clip_ckpt import strip_prefixes
    from .models.open_clip_hf import OpenClipConversionError, vision_to_hf
    from .state_io import load_state_dict

    state = load_state_dict(path)
    if any(k.startswith("visual.") for k in strip_prefixes(state)):
        try:
            state = vision_to_hf(state)
        except OpenClipConversionError as err:
            raise OwnModelsError(f"task {task!r}: checkpoint {path}: {err}") from None
    state = {(k if k.startswith("vision_model.") else f"vision_model.{k}"): v for k, v in state.items()}
    missing = [k for k in keys if k not in state]
    if missing:
        raise OwnModelsError(
            f"task {task!r}: checkpoint {path} lacks {len(missing)} of the {len(keys)} vision-tower tensors, "
            f"e.g. {missing[0]!r}; is it a fine-tune of models.pretrained?"
        )
    return {k: state[k] for k in keys}


def open_clip_pretrained(path: Path, arch: str):
    """(HF CLIPModel, HF tokenizer, image geometry) of an open_clip CLIP checkpoint, converted (models/open_clip_hf.py).

    The tokenizer is HF's CLIPTokenizer over open_clip's own bundled BPE (the same vocabulary), so nothing is
    downloaded and the merged output directory is a complete Hugging Face CLIP. Geometry: resize to the model's
    image size and centre-crop, with the model's mean and std (OpenAI CLIP's by default), as open_clip does.
    """
    import tempfile

    from .models.open_clip_hf import (
        OpenClipConversionError,
        hf_clip_from_open_clip,
        hf_tokenizer_from_open_clip_bpe,
        image_stats,
        load_open_clip,
    )
    from .state_io import UnsafeCheckpointError

    try:
        model = load_open_clip(path, arch)
        clip = hf_clip_from_open_clip(model)
    except UnsafeCheckpointError as err:
        raise OwnModelsError(
            f"models.pretrained {path}: {str(err).splitlines()[0]} (convert a pickled open_clip file once with "
            "concrete_subspace.models.open_clip_pickle.convert_checkpoint)"
        ) from None
    except OpenClipConversionError as err:
        raise OwnModelsError(f"models.pretrained: {err}") from None
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = hf_tokenizer_from_open_clip_bpe(tmp, clip.config.text_config.max_position_embeddings)
    size = clip.config.vision_config.image_size
    mean, std = image_stats(model)
    geometry = {"edge": size, "crop": (size, size), "mean": mean, "std": std, "divisor": 255.0}
    return clip, tokenizer, geometry


def build_problem(config: MergeConfig, *, progress: bool = False):
    """(MergeProblem, CLIPModel, tokenizer, per-task info) for a checked config, built by the library's CLIP adapter."""
    from transformers import AutoTokenizer, CLIPModel

    from .mini_zoo.files import quiet_library_bars
    from .models.clip_hf import ImageEncoder, build_clip_problem, merge_keys, zero_shot_head

    device = torch.device(config.device)
    if config.open_clip_arch is not None:
        clip, tokenizer, geometry = open_clip_pretrained(config.pretrained, config.open_clip_arch)
        clip = clip.to(device)
    else:
        with quiet_library_bars():
            clip = CLIPModel.from_pretrained(config.pretrained).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(config.pretrained)
        geometry = image_geometry(config.pretrained, clip.config.vision_config.image_size)
    encoder = ImageEncoder.from_clip(clip).eval().requires_grad_(False)
    keys = merge_keys(encoder)
    heads, unlabeled, evaluation, info = {}, {}, {}, {}
    by_name = {t.name: t for t in config.tasks}
    for task in config.tasks:
        images, labels, names = task_data(task, geometry, config.max_image_pixels, progress)
        templates = task_templates(task, config.templates)
        heads[task.name] = zero_shot_head(clip, tokenizer, names, templates, device)
        unlabeled[task.name] = images
        evaluation[task.name] = (images, labels if labels is not None else torch.full((len(images),), -1))
        info[task.name] = {"images": len(images), "labeled": labels is not None, "classnames": names}
        info[task.name]["templates"] = templates
    problem = build_clip_problem(
        encoder,
        heads,
        lambda name: {k: v.to(device) for k, v in vision_state(by_name[name].checkpoint, keys, name).items()},
        unlabeled,
        evaluation,
        batch_size=config.batch_size,
        seed=config.seed,
        transform=pixel_transform(geometry, device),
        info={"pretrained": str(config.pretrained), "scale": "own"},
    )
    problem.info["geometry"] = geometry
    return problem, clip, tokenizer, info


# ------------------------------------------------------------------------------------------------------ output
def write_image_processor(directory: Path, geometry: Mapping) -> None:
    """``preprocessor_config.json`` of a HF CLIPImageProcessor doing the preprocessing the merge used (open_clip's)."""
    from transformers import CLIPImageProcessor

    CLIPImageProcessor(
        size={"shortest_edge": geometry["edge"]},
        crop_size={"height": geometry["crop"][0], "width": geometry["crop"][1]},
        image_mean=list(geometry["mean"]),
        image_std=list(geometry["std"]),
    ).save_pretrained(directory)


def replace_directory(out: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` in a temporary directory beside ``out``, then move it into place, replacing ``out``.

    A symlinked ``out`` is followed: its target is what gets replaced (the link keeps pointing at the new
    directory). An error leaves ``out`` as it was; the old one is deleted only after the new one is in place.
    """
    out = Path(os.path.realpath(out)) if out.is_symlink() else out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)  # put the previous output back
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_out_dir(out: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse an output that is, contains or lies inside an input; whose parent is a file; or non-empty."""
    target = out.resolve()
    for path in inputs:
        source = path.resolve()
        if target == source or target in source.parents or source in target.parents:
            raise OwnModelsError(f"output {out} overlaps the input {path}; choose an output outside the inputs")
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise OwnModelsError(f"output {out}: {parent} is a file, not a directory")
    if out.exists() and not out.is_dir():
        raise OwnModelsError(f"output {out} is an existing file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OwnModelsError(f"output {out} is not empty; pass overwrite=True (--overwrite) to replace it")


def config_digest(config: MergeConfig) -> str:
    """Identifies a run for resuming: the config and the names, sizes and times of every input file."""
    files = [config.pretrained if config.open_clip_arch else config.pretrained / "config.json"]
    for task in config.tasks:
        files += [task.checkpoint, *sorted(task.images.rglob("*"))]
        files += [p for p in (task.classnames, task.templates) if p is not None]
    listing = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file()]
    text = json.dumps([repr(config), listing], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def entropy_history(history: Sequence[Mapping]) -> list[dict]:
    """The logged rows' step, loss and per-task entropies (what the report shows of the run)."""
    return [
        {k: v for k, v in row.items() if k in ("step", "loss") or k.startswith("entropy/")}
        for row in history
        if isinstance(row, Mapping)
    ]


def merge_own_models(
    config: Mapping | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    base: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Merge the config's fine-tuned CLIP models with its method; write the merged model to ``out``; the report.

    ``out`` (default: the config's ``out``) receives the merged CLIPModel directory, ``mask.safetensors``
    (Concrete methods) and ``report.json``; an existing non-empty ``out`` is replaced only when ``overwrite``.

    ``config`` is a mapping (paths relative to ``base``, default the current directory) or a YAML file (paths
    relative to it);
    see docs/merge_your_own.md for the keys. Every registry method runs this way; the test-time ones use the
    tasks' images (labels never reach them). Nothing is written when an input is bad or the merge is not finite.
    """
    from .checkpoint import atomic_write_json
    from .evaluation import evaluate
    from .mini_zoo.files import quiet_library_bars
    from .provenance import environment_info
    from .registry import get_method, run_method
    from .task_vectors import StateDictError, check_finite

    if isinstance(config, Mapping):
        config = check_config(config, Path(base) if base is not None else Path.cwd())
    else:
        config = check_config(read_yaml(config), Path(config).resolve().parent)
    if out is None and config.out is None:
        raise OwnModelsError("no output directory: give 'out' in the config (or --out)")
    out = Path(out) if out is not None else config.out
    check_out_dir(out, [config.pretrained, *(p for t in config.tasks for p in (t.checkpoint, t.images))], overwrite)
    spec = get_method(config.method)
    if config.method in NEEDS_TRAIN_LABELS:
        raise OwnModelsError(f"method {config.method!r} needs labeled training data, which a config does not give")
    params = dict(config.params)
    started = time.perf_counter()
    problem, clip, tokenizer, info = build_problem(config, progress=progress)
    unlabeled_only = [t for t, i in info.items() if not i["labeled"]]
    if params.get("eval_every") and unlabeled_only:
        raise OwnModelsError(f"params.eval_every needs labeled folders; tasks without labels: {unlabeled_only}")
    resume_dir = out.parent / f".{out.name}.resume-{config_digest(config)}"
    if "checkpoint_dir" in spec.defaults and "checkpoint_dir" not in params:
        params["checkpoint_dir"] = str(resume_dir)
    if "progress" in spec.defaults and "progress" not in params:
        params["progress"] = progress
    try:
        result = run_method(config.method, problem, **params)
    except OwnModelsError:
        raise
    except (TypeError, ValueError) as err:  # parameter types and ranges, incompatible checkpoints
        raise OwnModelsError(f"method {config.method!r}: {str(err).splitlines()[0]}") from None
    try:
        check_finite(result.state, name=f"merged model ({config.method})")
    except StateDictError as err:
        raise OwnModelsError(f"{err}; nothing written (are the parameters, e.g. scaling, too large?)") from None
    labeled = [t for t, i in info.items() if i["labeled"]]
    accuracy = evaluate(problem, result.state, labeled) if labeled else {}
    report = {
        "method": config.method,
        "out": str(out),
        "pretty_name": spec.pretty_name,
        "reference": spec.reference,
        "params": {k: v for k, v in result.params.items() if k not in ("checkpoint_dir", "progress")},
        "config": {
            "pretrained": str(config.pretrained),
            "open_clip_arch": config.open_clip_arch,
            "seed": config.seed,
            "batch_size": config.batch_size,
        },
        "tasks": {
            t.name: {"checkpoint": str(t.checkpoint), "images": str(t.images), **info[t.name]} for t in config.tasks
        },
        "accuracy": {t: accuracy.get(t) for t in problem.task_names},
        "history": entropy_history(result.history),
        "eval_mask": result.extras.get("eval_mask"),
        "wall_time_s": round(time.perf_counter() - started, 3),
        **environment_info(config.device),
    }
    mask = result.extras.get("mask_logits")

    def write(directory: Path) -> None:
        state = clip.state_dict()  # the pre-trained model with its vision tower replaced (clip itself unchanged)
        state.update({k: v.to(state[k].dtype).contiguous() for k, v in result.state.items()})
        with quiet_library_bars():
            clip.save_pretrained(directory, state_dict=state)
        tokenizer.save_pretrained(directory)
        if config.open_clip_arch is not None:
            write_image_processor(directory, problem.info["geometry"])
        for name in PROCESSOR_FILES:
            if (config.pretrained / name).is_file():
                shutil.copyfile(config.pretrained / name, directory / name)
        if mask is not None:
            from safetensors.torch import save_file

            save_file(
                {"mask_logits": mask.float().contiguous()},
                str(directory / "mask.safetensors"),
                metadata={"layout_keys": json.dumps(result.extras.get("layout_keys", []))},
            )
        atomic_write_json(directory / "report.json", report)

    replace_directory(out, write)
    shutil.rmtree(resume_dir, ignore_errors=True)
    return report
