"""Paper-scale CLIP from the Hugging Face Hub: ``openai/clip-vit-*`` + ``tanganke/clip-vit-*_<task>`` vision models.

The pre-trained ``CLIPModel`` gives the merged template (its vision tower), the frozen visual projection and the
zero-shot heads (task_vectors templates, :func:`concrete_subspace.models.clip_hf.zero_shot_head`). Each
fine-tuned ``CLIPVisionModel`` is loaded only inside ``load_finetuned(task)``, one at a time, and reduced to
the merged float tensors (keys ``vision_model.*`` as in :func:`clip_hf.merge_keys`). Every id accepts a
local directory instead, and a ``revision`` pin; offline runs fail fast on anything not cached
(:mod:`concrete_subspace.models.hub`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .clip_hf import ImageEncoder, build_clip_problem, merge_keys, zero_shot_head
from .hub import describe, resolve, resolved_commit
from .memory import as_device, as_dtype, warn_low_precision_states
from .templates import VISION_TASKS, classnames, templates

#: Architecture -> pre-trained CLIP on the Hub.
PRETRAINED_IDS: dict[str, str] = {
    "ViT-B-32": "openai/clip-vit-base-patch32",
    "ViT-L-14": "openai/clip-vit-large-patch14",
}
#: Task key -> suffix of fusion_bench's fine-tuned model ids.
HUB_TASK_NAMES: dict[str, str] = {
    "sun397": "sun397",
    "cars": "stanford-cars",
    "resisc45": "resisc45",
    "eurosat": "eurosat",
    "svhn": "svhn",
    "gtsrb": "gtsrb",
    "mnist": "mnist",
    "dtd": "dtd",
}


def pretrained_id(arch: str = "ViT-B-32") -> str:
    """Hub id of the pre-trained CLIP of ``arch`` ('ViT-B-32' or 'ViT-L-14')."""
    if arch not in PRETRAINED_IDS:
        raise KeyError(f"unknown CLIP architecture {arch!r}; known: {list(PRETRAINED_IDS)}")
    return PRETRAINED_IDS[arch]


def finetuned_id(task: str, arch: str = "ViT-B-32") -> str:
    """Hub id of fusion_bench's fine-tuned vision model, e.g. 'tanganke/clip-vit-base-patch32_stanford-cars'."""
    if task not in HUB_TASK_NAMES:
        raise KeyError(f"unknown vision task {task!r}; known: {list(VISION_TASKS)}")
    return f"tanganke/{pretrained_id(arch).split('/', 1)[1]}_{HUB_TASK_NAMES[task]}"


def load_clip(
    source: str, revision: str | None = None, *, device: Any = None, dtype: Any = None, cache_dir: str | None = None
) -> tuple[Any, Any, Any]:
    """(CLIPModel in eval mode, CLIPImageProcessor or None, tokenizer) from a Hub id or a local directory."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    path = resolve(source, revision, cache_dir=cache_dir)
    model = CLIPModel.from_pretrained(path, dtype=as_dtype(dtype)).to(as_device(device)).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    try:
        processor = CLIPImageProcessor.from_pretrained(path)
    except OSError:  # a directory without preprocessor_config.json: use data.paper.clip_image_transform
        processor = None
    return model, processor, tokenizer


def vision_state(
    source: str,
    revision: str | None = None,
    *,
    keys: Sequence[str] | None = None,
    reference: Mapping[str, Tensor] | None = None,
    device: Any = None,
    dtype: Any = None,
    cache_dir: str | None = None,
) -> dict[str, Tensor]:
    """Float tensors of a ``CLIPVisionModel`` checkpoint, keyed ``vision_model.*`` (the merged keys).

    Loads through ``CLIPVisionModel.from_pretrained`` (so transformers 4 checkpoints with a ``vision_model.``
    prefix and transformers 5 ones without it both work), keeps ``keys`` (default: all float parameters) and
    checks shapes against ``reference``. The module itself is dropped before returning.
    """
    from transformers import CLIPVisionModel

    path = resolve(source, revision, cache_dir=cache_dir)
    model = CLIPVisionModel.from_pretrained(path, dtype=torch.float32)
    params = {
        name if name.startswith("vision_model.") else f"vision_model.{name}": p.detach()
        for name, p in model.named_parameters()
        if p.is_floating_point()
    }
    del model
    wanted = list(keys) if keys is not None else list(params)
    missing = [k for k in wanted if k not in params]
    if missing:
        raise KeyError(
            f"{describe(str(source), revision)}: checkpoint lacks merged keys {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} (has {len(params)} float tensors)"
        )
    out = {}
    for k in wanted:
        if reference is not None and k in reference and reference[k].shape != params[k].shape:
            raise ValueError(
                f"{describe(str(source), revision)}: {k} has shape {tuple(params[k].shape)}, "
                f"pre-trained has {tuple(reference[k].shape)}"
            )
        out[k] = params[k].to(device=as_device(device), dtype=as_dtype(dtype))
    return out


def finetuned_loader(
    sources: Mapping[str, str],
    reference: Mapping[str, Tensor],
    *,
    revisions: Mapping[str, str | None] | None = None,
    device: Any = None,
    dtype: Any = None,
    cache_dir: str | None = None,
) -> Callable[[str], dict[str, Tensor]]:
    """``load_finetuned(task)``: loads that task's vision model when called (never all at once)."""
    revisions = dict(revisions or {})

    def load_finetuned(task: str) -> dict[str, Tensor]:
        if task not in sources:
            raise KeyError(f"no fine-tuned model for task {task!r}; known: {list(sources)}")
        return vision_state(
            sources[task],
            revisions.get(task),
            keys=list(reference),
            reference=reference,
            device=device,
            dtype=dtype,
            cache_dir=cache_dir,
        )

    return load_finetuned


def build_heads(
    clip_model: Any,
    tokenizer: Any,
    task_names: Sequence[str],
    names: Mapping[str, Sequence[str]],
    device: Any = None,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Frozen zero-shot heads [C, D] per task from class names and the task_vectors templates."""
    from tqdm.auto import tqdm

    heads = {}
    for task in tqdm(task_names, desc="zero-shot heads", disable=not progress):
        heads[task] = zero_shot_head(clip_model, tokenizer, names[task], templates(task), device=device).detach()
    return heads


def build_clip_hub_problem(
    arch: str = "ViT-B-32",
    tasks: Sequence[str] = VISION_TASKS,
    *,
    pretrained: str | None = None,
    finetuned: Mapping[str, str] | None = None,
    revisions: Mapping[str, str | None] | None = None,
    test_sets: Mapping[str, Any] | None = None,
    unlabeled_sets: Mapping[str, Any] | None = None,
    class_names: Mapping[str, Sequence[str]] | None = None,
    device: Any = None,
    dtype: Any = None,
    batch_size: int = 16,
    eval_batch_size: int = 128,
    seed: int = 0,
    limit: int | None = None,
    cache_dir: str | None = None,
    progress: bool = False,
):
    """Paper-scale CLIP :class:`MergeProblem`: Hub (or local) models, zero-shot heads, the eight test sets.

    ``pretrained`` / ``finetuned[task]`` default to the Hub ids of ``arch``; ``revisions`` maps 'pretrained' and
    task keys to pins. ``test_sets[task]`` defaults to the Hub test split (``data.paper.load_vision_test_set``,
    preprocessed by the checkpoint's CLIPImageProcessor); ``unlabeled_sets`` defaults to the test sets (the
    paper adapts on unlabeled test images). ``class_names`` overrides the names used for the heads.
    """
    from ..data.paper import clip_image_transform, load_vision_test_set, processor_transform, task_classnames

    tasks = tuple(tasks)
    revisions = dict(revisions or {})
    device, dtype = as_device(device), as_dtype(dtype)
    warn_low_precision_states(dtype, "build_clip_hub_problem")
    pretrained = pretrained or pretrained_id(arch)
    sources = {t: (finetuned or {}).get(t) or finetuned_id(t, arch) for t in tasks}
    clip_model, processor, tokenizer = load_clip(
        pretrained, revisions.get("pretrained"), device=device, dtype=dtype, cache_dir=cache_dir
    )
    transform = (
        processor_transform(processor)
        if processor is not None
        else clip_image_transform(clip_model.config.vision_config.image_size)
    )
    test_sets = dict(test_sets or {})
    for t in tasks:
        if t not in test_sets:
            test_sets[t] = load_vision_test_set(t, transform=transform, limit=limit, cache_dir=cache_dir)
    names = dict(class_names or {})
    for t in tasks:
        if t not in names:
            names[t] = task_classnames(t, test_sets[t]) if hasattr(test_sets[t], "classnames_raw") else classnames(t)
    heads = build_heads(clip_model, tokenizer, tasks, names, device=device, progress=progress)
    encoder = ImageEncoder.from_clip(clip_model)
    reference = {k: p.detach() for k, p in encoder.named_parameters() if k in set(merge_keys(encoder))}
    load_finetuned = finetuned_loader(
        sources, reference, revisions=revisions, device=device, dtype=dtype, cache_dir=cache_dir
    )
    info = {
        "family": "clip_hf",
        "arch": arch,
        "pretrained": pretrained,
        "pretrained_commit": resolved_commit(resolve(pretrained, revisions.get("pretrained"), cache_dir=cache_dir)),
        "finetuned": sources,
        "revisions": revisions,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
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
