"""The two training loops of a build: contrastive pre-training of the mini CLIP and fine-tuning of each expert."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..data.batching import step_indices
from .config import MiniConfig
from .model import to_pixel_values


def _cosine_lr(step: int, total: int, base: float, warmup_frac: float = 0.05) -> float:
    """Linear warm-up then cosine decay to 0."""
    warm = max(1, int(warmup_frac * total))
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _autocast(precision: str) -> torch.autocast:
    """bf16 autocast of the build's forwards (CPU build) for ``precision="bf16"``; disabled for fp32."""
    from ..loop import autocast

    return autocast(torch.device("cpu"), precision)


def _image_embeds(clip, pixel_values: Tensor) -> Tensor:
    return F.normalize(clip.visual_projection(clip.vision_model(pixel_values=pixel_values).pooler_output), dim=-1)


def _text_embeds(clip, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    pooled = clip.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    return F.normalize(clip.text_projection(pooled), dim=-1)


def pretrain(
    clip, tokenizer, images: np.ndarray, captions: Sequence[str], cfg: MiniConfig, seed: int, progress: bool = True
) -> list[float]:
    """Contrastive image-caption pre-training (CLIP loss; identical captions in a batch count as positives)."""
    tokens = tokenizer(
        list(captions), padding="max_length", max_length=cfg.max_text_len, truncation=True, return_tensors="pt"
    )
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


def finetune(
    encoder, head: Tensor, images: Tensor, labels: Tensor, cfg: MiniConfig, seed: int, desc: str, progress: bool = True
) -> list[float]:
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
