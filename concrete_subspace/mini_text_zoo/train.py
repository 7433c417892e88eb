"""Fine-tuning a mini-text expert: LoRA (merged in afterwards) or every BERT weight, against a frozen head."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..data.batching import step_indices
from ..mini_zoo.shared import cosine_lr, seeded_init
from .config import FINETUNE_KINDS, TextZooConfig


def finetune_expert(
    bert,
    head: Tensor,
    tokens: Mapping[str, Tensor],
    labels: Tensor,
    cfg: TextZooConfig,
    seed: int,
    desc: str,
    progress: bool = True,
    adapter_dir: Path | None = None,
):
    """Fine-tune a copy of ``bert`` against the frozen ``head``; returns (BertModel with LoRA merged in, losses).

    With ``adapter_dir``, a LoRA expert's adapter is also saved there in PEFT format before it is merged: the
    adapter is what the package ships (:mod:`.shipped`), the merged model what the loaders read."""
    from peft import LoraConfig, get_peft_model

    from ..models.text_encoder import SentenceEncoder

    model = copy.deepcopy(bert)
    if cfg.finetune == "lora":
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            target_modules=list(cfg.target_modules),
            lora_dropout=0.0,
            bias="none",
        )
        model = seeded_init(seed, lambda: get_peft_model(model, lora))
    elif cfg.finetune == "full":
        model.requires_grad_(True)
    else:
        raise ValueError(f"finetune must be one of {FINETUNE_KINDS}, got {cfg.finetune!r}")
    encoder = SentenceEncoder(model).train()
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # BERT's dropout draws from the global RNG: seed it, leave the caller's alone
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        losses = _train(encoder, opt, head, tokens, labels, cfg, seed, desc, progress)
    if cfg.finetune == "lora" and adapter_dir is not None:
        from .shipped import save_adapter

        save_adapter(model, adapter_dir)
    merged = model.merge_and_unload() if cfg.finetune == "lora" else model
    return merged.eval().requires_grad_(False), losses


def _train(
    encoder,
    opt,
    head: Tensor,
    tokens: Mapping[str, Tensor],
    labels: Tensor,
    cfg: TextZooConfig,
    seed: int,
    desc: str,
    progress: bool,
) -> list[float]:
    """The fine-tuning loop: cross-entropy of the frozen head's logits, cosine learning rate, batches by (seed, step)."""
    losses = []
    for step in tqdm(range(cfg.steps), desc=desc, disable=not progress, leave=False):
        idx = step_indices(len(labels), cfg.batch, step, seed)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg.steps, cfg.lr)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            features = encoder(**{k: v[idx] for k, v in tokens.items()})
        loss = F.cross_entropy(features.float() @ head.T, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
