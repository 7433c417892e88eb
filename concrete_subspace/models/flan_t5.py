"""Flan-T5 (base/large) + LoRA-16 adapters on eight GLUE tasks, as a :class:`MergeProblem` (paper Table 3).

- Fine-tuned states: each ``tanganke/flan-t5-<size>_glue-<task>_lora-16`` adapter is merged into a copy of the
  base model with peft's ``merge_and_unload`` inside ``load_finetuned(task)`` (one model at a time).
- Merged parameters (``merge_keys='lora'``, default): the weights of the modules the adapters target (``q``/``v``);
  every other tensor has a zero task vector, so leaving it out changes no merge result and saves the mask
  memory. ``merge_keys='all'`` merges every float parameter, as the reference code did.
- Objective: softmax entropy over the vocabulary of the FIRST decoder step's logits (decoder input = the
  decoder start token, T5's pad), as subspace_fusion's ``compute_loss`` does.
- Scores, as fusion_bench computes them: greedy generation with ``max_length=10``; exact match of the decoded
  prediction and the decoded target; STS-B: Spearman rho of the parsed floats (unparsable -> 0.0) over the
  whole split, x100 by the evaluator like accuracy.

:class:`FlanT5Merge` wraps ``T5ForConditionalGeneration`` as ``.model`` (keys ``model.*``): called with
``decoder_input_ids`` it returns first-step logits [B, V]; without, greedy-generated ids [B, <= max_length].
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.batching import step_indices
from ..data.paper import GLUE_TASKS, load_glue
from ..problem import MergeProblem
from .hub import resolve, resolved_commit
from .memory import as_device, as_dtype, warn_low_precision_states

BASE_IDS: dict[str, str] = {"base": "google/flan-t5-base", "large": "google/flan-t5-large"}
IGNORE_INDEX = -100


def base_id(size: str = "base") -> str:
    """Hub id of the Flan-T5 base model ('base' or 'large')."""
    if size not in BASE_IDS:
        raise KeyError(f"unknown Flan-T5 size {size!r}; known: {list(BASE_IDS)}")
    return BASE_IDS[size]


def adapter_id(task: str, size: str = "base") -> str:
    """Hub id of fusion_bench's LoRA-16 adapter, e.g. 'tanganke/flan-t5-base_glue-cola_lora-16'."""
    if task not in GLUE_TASKS:
        raise KeyError(f"unknown GLUE task {task!r}; known: {list(GLUE_TASKS)}")
    base_id(size)  # validates size
    return f"tanganke/flan-t5-{size}_glue-{task}_lora-16"


# ---------------------------------------------------------------------------------------------- forward passes


def first_step_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Logits [B, V] of the first decoder step (decoder input = the decoder start token)."""
    start = model.config.decoder_start_token_id
    decoder_input_ids = torch.full((input_ids.shape[0], 1), start, dtype=torch.long, device=input_ids.device)
    return model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits[
        :, 0, :
    ]


def trim_padding(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop trailing columns that are padding in every row (results unchanged, compute saved)."""
    length = int(attention_mask.sum(dim=1).max().clamp_min(1))
    return input_ids[:, :length], attention_mask[:, :length]


@torch.no_grad()
def greedy_generate(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, max_length: int = 10) -> Tensor:
    """Greedy decoding as ``generate(max_length=...)`` (start token included, pad after EOS), without a KV cache.

    Written out so that it runs under ``torch.func.functional_call`` with merged parameters.
    """
    cfg = model.config
    start, eos, pad = cfg.decoder_start_token_id, cfg.eos_token_id, cfg.pad_token_id
    encoder_outputs = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
    out = torch.full((input_ids.shape[0], 1), start, dtype=torch.long, device=input_ids.device)
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for _ in range(max_length - 1):
        logits = model(
            encoder_outputs=encoder_outputs, attention_mask=attention_mask, decoder_input_ids=out, use_cache=False
        ).logits[:, -1, :]
        token = torch.where(done, torch.full_like(done, pad, dtype=torch.long), logits.argmax(dim=-1))
        out = torch.cat([out, token[:, None]], dim=1)
        done |= token == eos
        if bool(done.all()):
            break
    return out


class FlanT5Merge(nn.Module):
    """T5 wrapper for merging: first-step logits with ``decoder_input_ids``, greedy ids without (chunked)."""

    def __init__(self, model: nn.Module, max_length: int = 10, chunk_size: int = 64):
        super().__init__()
        self.model = model
        self.max_length = max_length
        self.chunk_size = chunk_size

    def forward(self, input_ids: Tensor, attention_mask: Tensor, decoder_input_ids: Tensor | None = None) -> Tensor:
        if decoder_input_ids is not None:
            input_ids, attention_mask = trim_padding(input_ids, attention_mask)
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids
            ).logits[:, 0, :]
        pieces = []
        for start in range(0, input_ids.shape[0], self.chunk_size):
            ids, mask = trim_padding(
                input_ids[start : start + self.chunk_size], attention_mask[start : start + self.chunk_size]
            )
            pieces.append(greedy_generate(self.model, ids, mask, self.max_length))
        width = max(p.shape[1] for p in pieces)
        pad = self.model.config.pad_token_id
        return torch.cat([nn.functional.pad(p, (0, width - p.shape[1]), value=pad) for p in pieces])


# ---------------------------------------------------------------------------------------------- scoring


def decode_targets(tokenizer: Any, targets: Tensor) -> list[str]:
    """Target texts from label ids: drop special ids and non-positive ids, stop at -100 (fusion_bench's rule)."""
    special = set(tokenizer.all_special_ids)
    rows = []
    for row in targets.tolist():
        kept = []
        for token in row:
            if token == IGNORE_INDEX:
                break
            if token > 0 and token not in special:
                kept.append(token)
        rows.append(kept)
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def exact_match(predictions: Sequence[str], targets: Sequence[str]) -> tuple[float, int]:
    """(number of predictions equal to their target string, count)."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    return float(sum(p == t for p, t in zip(predictions, targets))), len(targets)


def parse_float(text: str) -> float:
    """float(text), or 0.0 when it does not parse (fusion_bench's STS-B rule)."""
    try:
        return float(text)
    except ValueError:
        return 0.0


def spearman_rho(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """Spearman rho between parsed predicted and target scores (nan when either side is constant)."""
    import numpy as np
    from scipy.stats import spearmanr

    preds = np.array([parse_float(p) for p in predictions])
    gold = np.array([parse_float(t) for t in targets])
    if len(preds) < 2 or preds.std() == 0 or gold.std() == 0:
        return float("nan")
    return float(spearmanr(preds, gold)[0])


def glue_score(tokenizer: Any) -> Callable[[str, Tensor, Tensor], tuple[float, int]]:
    """MergeProblem.score: exact match (count correct, n); STS-B: (rho * n, n) over the batch (= the whole split)."""

    def score(task: str, generated: Tensor, targets: Tensor) -> tuple[float, int]:
        predictions = tokenizer.batch_decode(generated.tolist(), skip_special_tokens=True)
        gold = decode_targets(tokenizer, targets)
        if task == "stsb":
            return spearman_rho(predictions, gold) * len(gold), len(gold)
        return exact_match(predictions, gold)

    return score


# ---------------------------------------------------------------------------------------------- LoRA -> full weights


def adapter_config(path: str | Path) -> dict:
    """The adapter_config.json of a peft adapter directory."""
    file = Path(path) / "adapter_config.json"
    if not file.exists():
        raise FileNotFoundError(f"{path} has no adapter_config.json (not a peft adapter directory)")
    return json.loads(file.read_text())


def lora_target_keys(model: nn.Module, configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Parameter names (``<module>.weight``) of the Linear modules that any adapter config targets."""
    keys = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        for cfg in configs:
            targets = cfg.get("target_modules")
            if isinstance(targets, str):
                hit = re.fullmatch(targets, name) is not None
            else:
                hit = any(name == t or name.endswith("." + t) for t in (targets or ()))
            if hit:
                keys.append(f"{name}.weight")
                break
    if not keys:
        raise ValueError(
            f"no Linear module matches the adapters' target_modules {[c.get('target_modules') for c in configs]}"
        )
    return keys


def lora_merged_state(
    base_model: nn.Module, adapter_path: str | Path, keys: Sequence[str], *, check_others: bool = True
) -> dict[str, Tensor]:
    """Full weights ``keys`` of base + adapter via peft ``merge_and_unload`` on a copy (the copy is then dropped).

    ``check_others`` verifies that no parameter outside ``keys`` changed (e.g. an adapter with trained biases).
    """
    from peft import PeftModel

    work = copy.deepcopy(base_model)
    merged = PeftModel.from_pretrained(work, str(adapter_path)).merge_and_unload()
    params = dict(merged.named_parameters())
    missing = [k for k in keys if k not in params]
    if missing:
        raise KeyError(f"{adapter_path}: merged model lacks {missing[:5]}")
    if check_others:
        wanted = set(keys)
        base_params = dict(base_model.named_parameters())
        changed = [k for k, p in params.items() if k not in wanted and not torch.equal(p, base_params[k])]
        if changed:
            raise ValueError(
                f"{adapter_path}: adapter changes parameters outside the merged keys {changed[:5]}; "
                f"use merge_keys='all'"
            )
    state = {k: params[k].detach().clone() for k in keys}
    del merged, work, params
    return state


# ---------------------------------------------------------------------------------------------- problem


def _tokenize(tokenizer: Any, texts: Sequence[str], max_length: int = 512) -> list[list[int]]:
    """Token ids (with EOS) of each text, truncated as fusion_bench does (model max length 512)."""
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def _pad(rows: Sequence[Sequence[int]], value: int) -> Tensor:
    """Right-pad integer rows into a [B, L] LongTensor."""
    width = max(1, max(len(r) for r in rows))
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def load_seq2seq(
    source: str, revision: str | None = None, *, device: Any = None, dtype: Any = None, cache_dir: str | None = None
) -> tuple[nn.Module, Any]:
    """(T5ForConditionalGeneration in eval mode, tokenizer) from a Hub id or a local directory."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    path = resolve(source, revision, cache_dir=cache_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=as_dtype(dtype))
    model = model.to(as_device(device)).eval().requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(path)


def build_flan_t5_problem(
    size: str = "base",
    tasks: Sequence[str] = GLUE_TASKS,
    *,
    base: str | None = None,
    adapters: Mapping[str, str] | None = None,
    revisions: Mapping[str, str | None] | None = None,
    data: Mapping[str, tuple[Sequence[str], Sequence[str]]] | None = None,
    merge_keys: str = "lora",
    device: Any = None,
    dtype: Any = None,
    batch_size: int = 16,
    eval_batch_size: int = 32,
    seed: int = 0,
    limit: int | None = None,
    max_length: int = 10,
    cache_dir: str | None = None,
) -> MergeProblem:
    """Flan-T5 + LoRA-16 GLUE :class:`MergeProblem` (see the module docstring for the exact semantics).

    ``base``/``adapters[task]`` default to the Hub ids (local directories accepted); ``revisions`` maps 'base'
    and task keys to pins. ``data[task] = (input texts, target texts)`` defaults to the GLUE evaluation split
    rendered by :func:`concrete_subspace.data.paper.load_glue` (first ``limit`` rows when given). The unlabeled
    test-time batches are drawn from the same inputs, as in the paper.
    """
    tasks = tuple(tasks)
    if merge_keys not in ("lora", "all"):
        raise ValueError(f"merge_keys must be 'lora' or 'all', got {merge_keys!r}")
    revisions = dict(revisions or {})
    device, dtype = as_device(device), as_dtype(dtype)
    warn_low_precision_states(dtype, "build_flan_t5_problem")
    base = base or base_id(size)
    sources = {t: (adapters or {}).get(t) or adapter_id(t, size) for t in tasks}
    model, tokenizer = load_seq2seq(base, revisions.get("base"), device=device, dtype=dtype, cache_dir=cache_dir)
    wrapper = FlanT5Merge(model, max_length=max_length).eval().requires_grad_(False)
    adapter_paths = {t: resolve(src, revisions.get(t), cache_dir=cache_dir) for t, src in sources.items()}
    if merge_keys == "lora":
        keys = lora_target_keys(model, [adapter_config(p) for p in adapter_paths.values()])
    else:
        keys = [k for k, p in model.named_parameters() if p.is_floating_point()]
    params = dict(model.named_parameters())
    pretrained = {f"model.{k}": params[k].detach() for k in keys}

    def load_finetuned(task: str) -> dict[str, Tensor]:
        if task not in adapter_paths:
            raise KeyError(f"no adapter for task {task!r}; known: {list(adapter_paths)}")
        state = lora_merged_state(model, adapter_paths[task], keys, check_others=merge_keys == "lora")
        return {f"model.{k}": v.to(device=device, dtype=dtype) for k, v in state.items()}

    texts = {}
    for t in tasks:
        inputs, targets = (data or {}).get(t) or load_glue(t, cache_dir=cache_dir, limit=limit)
        if limit is not None:
            inputs, targets = list(inputs)[:limit], list(targets)[:limit]
        if len(inputs) != len(targets) or not inputs:
            raise ValueError(f"GLUE {t}: {len(inputs)} inputs and {len(targets)} targets (need equal, non-zero)")
        texts[t] = (_tokenize(tokenizer, inputs), _tokenize(tokenizer, targets))
    pad = model.config.pad_token_id
    start = model.config.decoder_start_token_id

    def encode(rows: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        ids = _pad(rows, pad)
        mask = _pad([[1] * len(r) for r in rows], 0)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}

    def unlabeled_batch(task: str, step: int) -> dict[str, Tensor]:
        rows = texts[task][0]
        batch = encode([rows[int(i)] for i in step_indices(len(rows), batch_size, step, seed)])
        batch["decoder_input_ids"] = torch.full((len(batch["input_ids"]), 1), start, dtype=torch.long, device=device)
        return batch

    def eval_batches(task: str):
        rows, targets = texts[task]
        size = len(rows) if task == "stsb" else eval_batch_size  # Spearman needs the whole split at once
        for begin in range(0, len(rows), size):
            end = min(begin + size, len(rows))
            yield encode(rows[begin:end]), _pad(targets[begin:end], IGNORE_INDEX)

    def task_logits(task: str, features: Tensor) -> Tensor:
        if task not in texts:
            raise KeyError(f"unknown task {task!r}; known: {list(texts)}")
        return features

    info = {
        "family": "flan_t5_lora",
        "size": size,
        "base": base,
        "adapters": sources,
        "base_commit": resolved_commit(resolve(base, revisions.get("base"), cache_dir=cache_dir)),
        "adapter_commits": {t: resolved_commit(p) for t, p in adapter_paths.items()},
        "revisions": revisions,
        "merge_keys": merge_keys,
        "num_merged_tensors": len(keys),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "limit": limit,
        "max_length": max_length,
    }
    return MergeProblem(
        model=wrapper,
        pretrained=pretrained,
        task_names=tasks,
        load_finetuned=load_finetuned,
        task_logits=task_logits,
        unlabeled_batch=unlabeled_batch,
        eval_batches=eval_batches,
        score=glue_score(tokenizer),
        metric_name="exact match / Spearman x100 (STS-B)",
        info=info,
    )


def unwrap_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Merged keys ``model.X`` -> ``X`` as in a T5ForConditionalGeneration state dict (e.g. to save the merge)."""
    return {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
