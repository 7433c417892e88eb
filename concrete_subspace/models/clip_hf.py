"""Hugging Face CLIP adapter: image encoder, zero-shot heads, and the CLIP :class:`MergeProblem`.

As in the paper's CLIP setting, only the vision tower (``vision_model.*``) is merged; the visual projection
and the text tower stay pre-trained, and each task's head is its frozen zero-shot classifier built from class
names and prompt templates. Used by both scales: the mini zoo and the Hub checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batching import inputs_only, step_indices, take
from ..problem import MergeProblem


class ImageEncoder(nn.Module):
    """CLIP vision tower + frozen visual projection -> L2-normalised image embeddings."""

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module):
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection

    @classmethod
    def from_clip(cls, clip_model: nn.Module) -> ImageEncoder:
        """Share (not copy) the vision tower and projection of a ``transformers.CLIPModel``."""
        return cls(clip_model.vision_model, clip_model.visual_projection)

    def forward(self, pixel_values: Tensor) -> Tensor:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return F.normalize(self.visual_projection(pooled), dim=-1)


def merge_keys(encoder: ImageEncoder) -> list[str]:
    """Names of the merged parameters: every float parameter of the vision tower (as in a CLIPVisionModel)."""
    return [
        name for name, p in encoder.named_parameters() if name.startswith("vision_model.") and p.is_floating_point()
    ]


def pretrained_state(encoder: ImageEncoder) -> dict[str, Tensor]:
    """Detached pre-trained values of the merged parameters (shared storage, never written to)."""
    params = dict(encoder.named_parameters())
    return {k: params[k].detach() for k in merge_keys(encoder)}


@torch.no_grad()
def zero_shot_head(
    clip_model: nn.Module,
    tokenizer: Any,
    classnames: Sequence[str],
    templates: Sequence[Callable[[str], str] | str],
    device: torch.device | str | None = None,
) -> Tensor:
    """Zero-shot classifier [C, D]: normalise each prompt embedding, average over templates, normalise, x logit scale."""
    device = torch.device(device) if device is not None else next(clip_model.parameters()).device
    rows = []
    for name in classnames:
        prompts = [t(name) if callable(t) else t.format(name) for t in templates]
        tokens = tokenizer(prompts, padding=True, return_tensors="pt").to(device)
        pooled = clip_model.text_model(
            input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask")
        ).pooler_output
        embeds = F.normalize(clip_model.text_projection(pooled), dim=-1)
        rows.append(F.normalize(embeds.mean(dim=0), dim=-1))
    return torch.stack(rows) * clip_model.logit_scale.exp()


def build_clip_problem(
    encoder: ImageEncoder,
    heads: Mapping[str, Tensor],
    load_finetuned: Callable[[str], Mapping[str, Tensor]],
    unlabeled: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    *,
    batch_size: int = 16,
    seed: int = 0,
    eval_batch_size: int = 256,
    reshuffle: bool = False,
    train: Mapping[str, Any] | None = None,
    transform: Callable[[Any], Any] | None = None,
    info: dict | None = None,
) -> MergeProblem:
    """Wire a CLIP encoder, per-task heads and per-task datasets into a :class:`MergeProblem`.

    Datasets are tensors of images (unlabeled), ``(images, labels)`` tensor pairs, or indexable datasets
    returning ``(image, label)``. ``reshuffle`` as in :func:`step_indices`. ``transform`` (optional) maps a collated image batch to pixel_values.
    """
    tasks = tuple(heads)
    for name, data in (("unlabeled", unlabeled), ("evaluation", evaluation)):
        missing = [t for t in tasks if t not in data]
        if missing:
            raise ValueError(f"build_clip_problem: no {name} data for task(s) {missing}")
    encoder.eval().requires_grad_(False)
    prepare = transform or (lambda x: x)

    def task_logits(task: str, features: Tensor) -> Tensor:
        if task not in heads:
            raise KeyError(f"task {task!r} has no head; known tasks: {list(heads)}")
        head = heads[task]
        return features @ head.to(features.dtype).T

    def unlabeled_batch(task: str, step: int) -> Tensor:
        data = unlabeled[task]
        data = data[0] if isinstance(data, tuple) else data
        return prepare(inputs_only(take(data, step_indices(len(data), batch_size, step, seed, reshuffle))))

    def batches(source: Mapping[str, Any]) -> Callable[[str], Any]:
        def iterate(task: str):
            data = source[task]
            n = len(data[1]) if isinstance(data, tuple) else len(data)
            for start in range(0, n, eval_batch_size):
                idx = torch.arange(start, min(start + eval_batch_size, n))
                if isinstance(data, tuple):
                    yield prepare(data[0][idx]), data[1][idx]
                else:
                    images, labels = take(data, idx)
                    yield prepare(images), labels

        return iterate

    return MergeProblem(
        model=encoder,
        pretrained=pretrained_state(encoder),
        task_names=tasks,
        load_finetuned=load_finetuned,
        task_logits=task_logits,
        unlabeled_batch=unlabeled_batch,
        eval_batches=batches(evaluation),
        train_batches=batches(train) if train is not None else None,
        info=dict(info or {}),
    )
