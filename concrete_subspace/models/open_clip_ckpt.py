"""The paper's own open_clip checkpoints (mlfoundations/task_vectors format) on the same merge code.

Layout (task_vectors README): ``<root>/<arch>/zeroshot.pt`` and ``<root>/<arch>/<Dataset>/finetuned.pt`` with
``Dataset`` in :data:`TASK_DIRS` (``Cars``, ``DTD``, ...), optionally ``<root>/<arch>/head_<Dataset>.pt``.

Safety (:mod:`.open_clip_pickle`): files are read with ``torch.load(weights_only=True)``, which accepts state dicts
only. The released files are whole pickled ``ImageEncoder`` modules; reading those executes pickle code, so it happens only with
the explicit opt-in ``allow_pickle=True`` (a warning is issued). Even then a restricted unpickler refuses any
global outside torch / open_clip / torchvision / numpy / PIL / the task_vectors ``src.*`` classes (those become
inert stub modules), so e.g. ``os.system`` is never called; this narrows, but does not remove, the risk of a
malicious file. Convert once with :func:`convert_checkpoint` (writes a safetensors state dict), or a whole folder
with :func:`convert_checkpoint_dir`, and load the converted files safely from then on.

Mapping: a checkpoint key ``model.visual.X`` (or ``visual.X``) becomes the merged key ``vision_model.X`` of
:class:`OpenCLIPImageEncoder`, a :class:`clip_hf.ImageEncoder` whose ``vision_model`` is open_clip's
``VisionTransformer`` (its projection ``proj`` is part of the fine-tuned, merged weights, as in the paper's
runs) and whose features are ``normalize(visual(x))``, as task_vectors' normalising ClassificationHead sees them.
Zero-shot heads: normalise each template's text embedding, average over templates, normalise, x logit_scale.exp().
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .clip_hf import ImageEncoder, build_clip_problem, merge_keys
from .memory import as_device, as_dtype, warn_low_precision_states
from .open_clip_pickle import UnsafeCheckpointError, convert_checkpoint, load_checkpoint  # noqa: F401
from .templates import VISION_TASKS, classnames, templates

#: Task key -> task_vectors dataset directory / head name.
TASK_DIRS: dict[str, str] = {
    "sun397": "SUN397",
    "cars": "Cars",
    "resisc45": "RESISC45",
    "eurosat": "EuroSAT",
    "svhn": "SVHN",
    "gtsrb": "GTSRB",
    "mnist": "MNIST",
    "dtd": "DTD",
}
VISUAL_PREFIX = "visual."
MERGED_PREFIX = "vision_model."


# ---------------------------------------------------------------------------------------------- key mapping


def strip_prefixes(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop wrapper prefixes: task_vectors' ImageEncoder ``model.``, DataParallel ``module.``."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def visual_to_merged(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Checkpoint keys ``[model.]visual.X`` -> merged keys ``vision_model.X`` (other keys dropped)."""
    return {
        MERGED_PREFIX + k[len(VISUAL_PREFIX) :]: v
        for k, v in strip_prefixes(state).items()
        if k.startswith(VISUAL_PREFIX)
    }


def merged_to_visual(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Merged keys ``vision_model.X`` -> open_clip keys ``visual.X`` (e.g. to load a merged state into a CLIP)."""
    return {VISUAL_PREFIX + k[len(MERGED_PREFIX) :]: v for k, v in state.items() if k.startswith(MERGED_PREFIX)}


def check_against(state: Mapping[str, Tensor], reference: Mapping[str, Tensor], source: str) -> None:
    """Same keys and shapes as ``reference``, with an error naming the first differences."""
    missing = [k for k in reference if k not in state]
    extra = [k for k in state if k not in reference]
    if missing or extra:
        raise KeyError(f"{source}: keys differ from the model: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, ref in reference.items():
        if state[k].shape != ref.shape:
            raise ValueError(f"{source}: {k} has shape {tuple(state[k].shape)}, model has {tuple(ref.shape)}")


# ---------------------------------------------------------------------------------------------- model and heads


class OpenCLIPImageEncoder(ImageEncoder):
    """open_clip ``VisionTransformer`` as ``vision_model`` (projection included) -> L2-normalised embeddings."""

    def __init__(self, visual: nn.Module):
        super().__init__(visual, nn.Identity())

    def forward(self, pixel_values: Tensor) -> Tensor:
        return F.normalize(self.vision_model(pixel_values), dim=-1)


def create_open_clip(
    arch: str = "ViT-B-32",
    pretrained: str | None = "openai",
    *,
    device: Any = None,
    dtype: Any = None,
    cache_dir: str | None = None,
) -> tuple[nn.Module, Callable, Callable]:
    """(open_clip CLIP in eval mode, validation preprocess, tokenizer); ``pretrained`` as open_clip names it or None."""
    import open_clip

    from .hub import NotCachedError, is_offline

    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, cache_dir=cache_dir)
    except (OSError, RuntimeError) as err:
        if is_offline():
            raise NotCachedError(
                f"open_clip {arch} pretrained={pretrained!r} is not cached and HF_HUB_OFFLINE is set; "
                f"prefetch it with `python -m concrete_subspace.download --what open-clip`"
            ) from err
        raise
    model = model.to(device=as_device(device), dtype=as_dtype(dtype)).eval().requires_grad_(False)
    return model, preprocess, open_clip.get_tokenizer(arch)


def image_size(clip_model: nn.Module) -> int:
    """Input resolution of an open_clip CLIP's visual tower (224 for the paper's ViT-B-32 and ViT-L-14)."""
    size = getattr(clip_model.visual, "image_size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return int(size)


@torch.no_grad()
def zero_shot_head(
    clip_model: nn.Module,
    tokenizer: Callable,
    names: Sequence[str],
    prompt_templates: Sequence[Callable[[str], str]],
    device: Any = None,
) -> Tensor:
    """task_vectors' head [C, D]: per class, normalise each template embedding, mean, normalise; x logit_scale.exp()."""
    device = as_device(device) if device is not None else next(clip_model.parameters()).device
    rows = []
    for name in names:
        tokens = tokenizer([t(name) for t in prompt_templates]).to(device)
        embeds = F.normalize(clip_model.encode_text(tokens).float(), dim=-1)
        rows.append(F.normalize(embeds.mean(dim=0), dim=-1))
    return torch.stack(rows) * clip_model.logit_scale.exp().float()


def load_head(path: str | os.PathLike, *, allow_pickle: bool = False) -> Tensor:
    """Weights [C, D] of a task_vectors ``head_<Dataset>.pt`` (its bias is zero and is checked to be)."""
    state = load_checkpoint(path, allow_pickle=allow_pickle)
    if "weight" not in state:
        raise KeyError(f"{path}: no 'weight' in head state dict (keys {list(state)[:5]})")
    if "bias" in state and state["bias"].abs().max() > 0:
        raise ValueError(f"{path}: head has a non-zero bias; task_vectors heads are bias-free")
    return state["weight"].float()


def prefer_converted(stem: Path) -> Path:
    """``stem.safetensors`` when a converted copy exists, else ``stem.pt`` (which may not exist)."""
    converted = stem.with_suffix(".safetensors")
    return converted if converted.exists() else stem.with_suffix(".pt")


def convert_checkpoint_dir(
    root: str | os.PathLike, arch: str = "ViT-B-32", tasks: Sequence[str] = VISION_TASKS, *, allow_pickle: bool = False
) -> list[Path]:
    """Convert a task_vectors folder once: a ``.safetensors`` copy beside each ``.pt`` (zeroshot, finetuned, heads).

    Files that already have a converted copy are skipped; the loaders then read the safe copies
    (:func:`checkpoint_paths` prefers them), so the pickled originals are opened only here, with the opt-in.
    """
    paths = checkpoint_paths(root, arch, tasks)
    base = paths["zeroshot"].parent
    stems = [p.with_suffix("") for p in paths.values()] + [base / f"head_{TASK_DIRS[t]}" for t in tasks]
    written = []
    for stem in stems:
        src, dst = stem.with_suffix(".pt"), stem.with_suffix(".safetensors")
        if src.exists() and not dst.exists():
            written.append(convert_checkpoint(src, dst, allow_pickle=allow_pickle))
    return written


def checkpoint_paths(root: str | os.PathLike, arch: str, tasks: Sequence[str]) -> dict[str, Path]:
    """Paths of zeroshot and per-task finetuned checkpoints (a ``.safetensors`` conversion is preferred if present).

    ``root`` is the task_vectors checkpoint folder or its ``<arch>`` subfolder; a missing folder or file fails here,
    before any model is built, with the expected path of each missing file.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"task_vectors checkpoint directory {str(root)!r} does not exist (expected "
            f"{root}/{arch}/zeroshot.pt and {root}/{arch}/<Dataset>/finetuned.pt)"
        )
    base = root / arch if (root / arch).is_dir() else root
    paths = {"zeroshot": prefer_converted(base / "zeroshot")}
    for t in tasks:
        if t not in TASK_DIRS:
            raise KeyError(f"unknown vision task {t!r}; known: {list(VISION_TASKS)}")
        paths[t] = prefer_converted(base / TASK_DIRS[t] / "finetuned")
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"task_vectors checkpoints incomplete under {base}: missing {missing} "
            f"(each may also be a converted .safetensors file)"
        )
    return paths


def build_open_clip_problem(
    checkpoint_dir: str | os.PathLike,
    arch: str = "ViT-B-32",
    tasks: Sequence[str] = VISION_TASKS,
    *,
    test_sets: Mapping[str, Any] | None = None,
    unlabeled_sets: Mapping[str, Any] | None = None,
    clip_model: nn.Module | None = None,
    tokenizer: Callable | None = None,
    pretrained: str | None = "openai",
    class_names: Mapping[str, Sequence[str]] | None = None,
    use_head_files: bool = True,
    allow_pickle: bool = False,
    device: Any = None,
    dtype: Any = None,
    batch_size: int = 16,
    eval_batch_size: int = 128,
    seed: int = 0,
    limit: int | None = None,
    corruption: Callable[[Tensor], Tensor] | None = None,
    cache_dir: str | None = None,
    progress: bool = False,
):
    """:class:`MergeProblem` from task_vectors checkpoints: θ0 = zeroshot.pt's visual tower, θ_t = finetuned.pt.

    ``clip_model``/``tokenizer`` (an open_clip CLIP and its tokenizer) provide the architecture and the text
    tower for the heads; by default ``open_clip.create_model_and_transforms(arch, pretrained)``. Heads come
    from ``head_<Dataset>.pt`` when present and ``use_head_files``, else from the templates. ``test_sets`` are
    per-task datasets of preprocessed ``(pixels, label)``; a task without one gets its Hub test split
    (``data.paper.load_vision_test_set``, first ``limit`` images) through ``clip_image_transform`` at the model's
    image size, with ``corruption`` applied before normalisation. ``unlabeled_sets`` defaults to the test sets.
    """
    from tqdm.auto import tqdm

    tasks = tuple(tasks)
    device, dtype = as_device(device), as_dtype(dtype)
    warn_low_precision_states(dtype, "build_open_clip_problem")
    paths = checkpoint_paths(checkpoint_dir, arch, tasks)
    if clip_model is None:
        clip_model, _, tokenizer = create_open_clip(arch, pretrained, device=device, dtype=dtype)
    elif tokenizer is None:
        import open_clip

        tokenizer = open_clip.get_tokenizer(arch)
    clip_model = clip_model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    test_sets = dict(test_sets or {})
    if any(t not in test_sets for t in tasks):
        from ..data.paper import clip_image_transform, load_vision_test_set

        transform = clip_image_transform(image_size(clip_model), corruption=corruption)
        for t in tasks:
            if t not in test_sets:
                test_sets[t] = load_vision_test_set(t, transform=transform, limit=limit, cache_dir=cache_dir)
    encoder = OpenCLIPImageEncoder(clip_model.visual)
    reference = {k: p.detach() for k, p in encoder.named_parameters() if k in set(merge_keys(encoder))}
    buffers = {MERGED_PREFIX + k for k, _ in clip_model.visual.named_buffers()}

    def merged_params(path: Path) -> dict[str, Tensor]:
        state = visual_to_merged(load_checkpoint(path, allow_pickle=allow_pickle))
        state = {k: v for k, v in state.items() if k not in buffers}
        check_against(state, reference, str(path))
        return state

    zeroshot = merged_params(paths["zeroshot"])
    with torch.no_grad():
        for k, p in reference.items():
            p.copy_(zeroshot[k].to(p))
    del zeroshot

    def load_finetuned(task: str) -> dict[str, Tensor]:
        if task not in paths or task == "zeroshot":
            raise KeyError(f"no fine-tuned checkpoint for task {task!r}; known: {list(tasks)}")
        return {k: v.to(device=device, dtype=dtype) for k, v in merged_params(paths[task]).items()}

    names = dict(class_names or {})
    heads = {}
    base = paths["zeroshot"].parent
    for task in tqdm(tasks, desc="zero-shot heads", disable=not progress):
        head_file = prefer_converted(base / f"head_{TASK_DIRS[task]}")
        if use_head_files and head_file.exists():
            heads[task] = load_head(head_file, allow_pickle=allow_pickle).to(device)
            continue
        if task not in names:
            raw = getattr(test_sets[task], "classnames_raw", None)
            names[task] = classnames(task, raw)
        heads[task] = zero_shot_head(clip_model, tokenizer, names[task], templates(task), device=device)
    info = {
        "family": "open_clip_task_vectors",
        "arch": arch,
        "checkpoint_dir": str(checkpoint_dir),
        "checkpoints": {k: str(p) for k, p in paths.items()},
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "allow_pickle": allow_pickle,
        "limit": limit,
    }
    return build_clip_problem(
        encoder,
        heads,
        load_finetuned,
        unlabeled_sets or test_sets,
        test_sets,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        seed=seed,
        transform=lambda x: x.to(device=device, dtype=dtype),
        info=info,
    )
