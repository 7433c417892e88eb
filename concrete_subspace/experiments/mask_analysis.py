"""Notebook 06 and the evaluation-mask ablation: learned-mask statistics per layer, the mask-only effect, masked
individual models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

from ..evaluation import average, evaluate
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
    from ..diagnostics import mask_digest
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


def record_seed(key: str, record: RunRecord) -> int:
    """The run seed of a record (``params["seed"]``; records of notebook 01 are keyed ``name`` or ``name@seed<s>``)."""
    return int(record.params.get("seed", key.partition("@seed")[2] or 0))


def mask_only_scores(record: RunRecord) -> dict[str, float]:
    """Per-task accuracy of the learned mask at the method's initial coefficients.

    Concrete TA: its final model (λ never moves). Concrete AdaMerging: stage 2 at step 0 (w = init, the kept mask),
    recorded by the run (``extras["mask_only"]``).
    """
    info = record.extras.get("mask_only")
    if not isinstance(info, dict):
        raise ValueError(f"run {record.method} ({record.key}) recorded no mask-only effect (extras['mask_only'])")
    return dict(record.scores) if info.get("final_model") else dict(info["scores"])


def mask_effect_table(
    records: Mapping[str, RunRecord],
    baseline: str = "task_arithmetic",
    baseline_at: Mapping[float, float] | None = None,
) -> pd.DataFrame:
    """One row per Concrete run (every seed): the mask-only effect against task arithmetic at the same λ.

    Columns: method, seed, coefficients (λ), mask_only (average accuracy of the learned mask at λ), task_arithmetic
    (TA at λ), mask_effect (the difference), headline (the run's final, sampled-mask model), expected_mask (the same
    final model under σ(x), a diagnostic). Task arithmetic at λ is the ``baseline`` run when its ``scaling`` is that
    λ, else ``baseline_at[λ]`` (average accuracy by λ, e.g. a λ sweep: the mini-text zoo runs task arithmetic at 0.2
    while Concrete AdaMerging starts at 0.3).
    """
    if baseline not in records:
        raise KeyError(f"mask_effect_table needs a {baseline!r} record among {sorted(records)}")
    ta = records[baseline]
    rows = []
    for key, record in records.items():
        info = record.extras.get("mask_only")
        if not isinstance(info, dict):
            continue  # not a Concrete run
        at = float(info["coefficients"])
        if float(ta.params.get("scaling")) == at:
            ta_average = ta.average
        elif baseline_at is not None and at in baseline_at:
            ta_average = float(baseline_at[at])
        else:
            raise ValueError(
                f"run {key}: mask-only coefficients {at} differ from {baseline} scaling "
                f"{ta.params.get('scaling')}; run {baseline} at the same λ or pass baseline_at with λ {at}"
            )
        mask_only = average(mask_only_scores(record))
        expected = record.extras.get("expected_mask_scores")
        rows.append(
            {
                "method": record.method,
                "seed": record_seed(key, record),
                "coefficients": at,
                "mask_only": mask_only,
                baseline: ta_average,
                "mask_effect": mask_only - ta_average,
                "headline": record.average,
                "expected_mask": average(expected) if expected else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def mask_effect_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation (over seeds; NaN for one seed) and number of seeds of each column per method."""
    values = [c for c in ("mask_only", "task_arithmetic", "mask_effect", "headline", "expected_mask") if c in table]
    grouped = table.groupby("method", sort=False)[values]
    out = grouped.mean().add_suffix("_mean").join(grouped.std().add_suffix("_std"))
    out["seeds"] = table.groupby("method", sort=False)["seed"].nunique()
    return out.reset_index()


def logit_layer_table(density: pd.DataFrame) -> pd.DataFrame:
    """Per method and layer: mean |logit| and the share of |logit| > 0.5, averaged over the layer's tensors.

    Mean keep probability hides a mask that moved up and down in equal parts; these show whether it learned.
    """
    columns = [c for c in ("mean_abs_logit", "large_logit_share", "mean_keep_probability") if c in density]
    return density.groupby(["method", "layer"], sort=False)[columns].mean().reset_index()
