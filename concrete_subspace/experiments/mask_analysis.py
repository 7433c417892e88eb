"""Notebook 06 and the evaluation-mask ablation: learned-mask density per layer, masked individual models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

from ..evaluation import evaluate
from ..masks import evaluation_mask
from ..merging import masked_merge
from ..problem import MergeProblem
from ..registry import stream_task_vectors
from ..task_vectors import task_vector
from .cache import RunRecord, cache_for, cached_table
from .configs import BaseConfig
from .problems import problem_identity
from .tables import pretty, tidy_scores, with_average


def mask_density_table(records: Mapping[str, RunRecord]) -> pd.DataFrame:
    """Per merged tensor: method, tensor, layer (block index or 'other'), density (σ(x) > 0.5), mean keep probability."""
    rows = []
    for method, record in records.items():
        per_tensor = record.extras.get("mask_density", {}).get("per_tensor", {})
        for i, (key, stats) in enumerate(per_tensor.items()):
            rows.append(
                {
                    "method": method,
                    "tensor": key,
                    "index": i,
                    "layer": layer_of(key),
                    "kind": "weight" if key.endswith("weight") else "bias",
                    **stats,
                }
            )
    return pd.DataFrame(rows)


#: Names of the per-block containers (HF CLIP: encoder.layers.N, open_clip: transformer.resblocks.N) and of the
#: open_clip stem tensors that HF CLIP keeps under 'embeddings'.
BLOCK_CONTAINERS = ("layers", "resblocks")
OPEN_CLIP_STEM = ("conv1", "class_embedding", "positional_embedding", "ln_pre")


def layer_of(key: str) -> str:
    """'vision_model.encoder.layers.3.mlp.fc1.weight' (or open_clip's '...resblocks.3...') -> 'layer 3';
    embeddings (open_clip: conv1, class/positional embedding, ln_pre) -> 'embeddings'; final norms -> their module."""
    parts = key.split(".")
    for container in BLOCK_CONTAINERS:
        if container in parts[:-1]:
            return f"layer {parts[parts.index(container) + 1]}"
    if "embeddings" in parts or any(p in OPEN_CLIP_STEM for p in parts):
        return "embeddings"
    if len(parts) == 2 and parts[0] == "vision_model":  # open_clip's projection 'vision_model.proj'
        return parts[1]
    return parts[-2] if len(parts) > 1 else key


def mask_of(record: RunRecord, problem: MergeProblem, kind: str | None = None) -> dict[str, Tensor]:
    """The exact (unrescaled) mask the run's final model used, as a state dict; verified against its digest.

    Redrawn from the saved logits with the kind, generator seed and temperature the run recorded
    (``extras["eval_mask"]``). ``kind`` draws another kind of evaluation mask with the same generator seed instead
    (e.g. 'hard' for the evaluation-mask ablation).
    """
    from ..concrete import mask_digest
    from ..task_vectors import ParamLayout

    spec = record.extras.get("eval_mask")
    if not isinstance(spec, dict):
        raise ValueError(
            f"run {record.method} ({record.key}) recorded no evaluation mask (extras['eval_mask']); "
            "only the Concrete methods have one"
        )
    logits = record.tensor("mask_logits").to(problem.device)
    layout = ParamLayout.of(problem.pretrained)
    if layout.num_params != logits.numel():
        raise ValueError(
            f"run {record.method} ({record.key}): {logits.numel()} mask logits but the problem merges "
            f"{layout.num_params} parameters (another model?)"
        )
    chosen = spec["kind"] if kind is None else kind
    generator = torch.Generator(device=logits.device).manual_seed(spec["seed"])
    mask = evaluation_mask(logits, chosen, temperature=spec["temperature"], generator=generator)
    if chosen == spec["kind"] and mask_digest(mask) != spec["sha256"]:
        raise ValueError(
            f"run {record.method} ({record.key}): the redrawn {chosen!r} mask differs from the one its "
            f"final model used (drawn on {spec['device']}, redrawn on {logits.device}); analyse it on "
            f"the device it ran on"
        )
    return layout.unflatten(mask)


def masked_individual_table(problem: MergeProblem, records: Mapping[str, RunRecord]) -> pd.DataFrame:
    """Each task's fine-tuned model with the learned mask applied to its own task vector (θ0 + τ_i ⊙ m/mean m)."""
    rows = []
    masks = {m: mask_of(r, problem) for m, r in records.items()}
    for task in problem.task_names:
        vector = task_vector(problem.pretrained, problem.load_finetuned(task))
        full = {k: problem.pretrained[k] + vector[k] for k in vector}
        rows.append({"model": "individual", "task": task, "accuracy": evaluate(problem, full, tasks=[task])[task]})
        for method, mask in masks.items():
            state = masked_merge(problem.pretrained, [vector], [1.0], mask)
            rows.append(
                {
                    "model": f"masked by {pretty(method)}",
                    "task": task,
                    "accuracy": evaluate(problem, state, tasks=[task])[task],
                }
            )
    table = pd.DataFrame(rows)
    return with_average(table, "model")


def masked_individuals(config: BaseConfig, problem: MergeProblem, records: Mapping[str, RunRecord]) -> pd.DataFrame:
    """:func:`masked_individual_table`, cached by the runs' keys."""
    context = {**problem_identity(problem), "runs": {m: r.key for m, r in records.items()}}
    return cached_table(
        cache_for(config), "masked_individual", context, lambda: masked_individual_table(problem, records)
    )


def eval_mask_table(problem: MergeProblem, record: RunRecord, kinds: Sequence[str]) -> pd.DataFrame:
    """A Concrete TA run's learned mask evaluated with each kind of evaluation mask (no re-training)."""
    vectors = list(stream_task_vectors(problem))
    scaling = record.params["scaling"]
    rows = []
    for kind in kinds:
        state = masked_merge(problem.pretrained, vectors, [scaling] * len(vectors), mask_of(record, problem, kind))
        rows.append(tidy_scores("concrete_task_arithmetic", evaluate(problem, state), eval_mask=kind))
    return pd.concat(rows, ignore_index=True)
