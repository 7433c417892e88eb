"""Diagnostics of the Concrete methods (docs/method.md §7), recorded beside every result and never changing it.

The mask's logit statistics, a record that redraws the final model's exact evaluation mask, the merge with the
learned mask at the initial coefficients (the mask-only effect), where the merge coefficients sit, and the final
model under the expected mask σ(x). None of them draws from a run's generator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import Tensor

from .evaluation import average
from .loop import RunContext
from .masks import density, evaluation_mask
from .task_vectors import ParamLayout


def mask_digest(mask: Tensor) -> str:
    """SHA-256 of a mask's float32 values: identifies the exact mask a final model used."""
    return hashlib.sha256(mask.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def eval_mask_record(mask: Tensor, kind: str, seed: int, temperature: float) -> dict:
    """How to redraw the exact mask of the final model (kind, generator seed, temperature, device) and its digest."""
    return {
        "kind": kind,
        "seed": int(seed),
        "temperature": float(temperature),
        "device": str(mask.device),
        "sha256": mask_digest(mask),
    }


def mask_extras(logits: Tensor, layout: ParamLayout) -> dict:
    """The learned mask logits, the tensor names they follow and the mask's density (overall and per tensor)."""
    return {
        "mask_logits": logits.detach().cpu(),
        "layout_keys": list(layout.keys),
        "mask_density": density(logits, layout),
    }


def density_row(logits: Tensor) -> dict:
    """History columns of the mask's overall statistics (see :func:`concrete_subspace.masks.density`)."""
    stats = density(logits)
    keys = ("density", "mean_keep_probability", "mean_abs_logit", "large_logit_share")
    return {key: stats[key] for key in keys}


def coefficient_row(coefficients: Tensor) -> dict:
    """Where the merge coefficients are: their mean and the share at or beyond 0 or 1 (one inner step at lr 1 drives
    layer-wise coefficients there, which is why accuracy at w' can fall while the mask improves)."""
    with torch.no_grad():
        c = coefficients.detach().float()
        return {
            "coefficient_mean": float(c.mean()),
            "coefficient_share_at_bounds": float(((c <= 0) | (c >= 1)).float().mean()),
        }


def scores_row(prefix: str, scores: dict[str, float]) -> dict:
    """History columns ``<prefix>/<task>`` and ``<prefix>_accuracy`` (the average) for a diagnostic evaluation."""
    return {**{f"{prefix}/{t}": s for t, s in scores.items()}, f"{prefix}_accuracy": average(scores)}


def row_scores(row: dict) -> dict[str, float]:
    """The per-task accuracies (``acc/<task>`` columns) of a history row, by task."""
    return {k.removeprefix("acc/"): v for k, v in row.items() if k.startswith("acc/")}


def mask_only_row(row: dict, score_mask_only) -> dict:
    """Meta-stage columns ``mask_only/...``: the row's evaluation mask at the initial coefficients instead of w'.

    At step 0 no inner step has moved w' from its initial value, so the row's own scores are this model's.
    """
    return scores_row("mask_only", row_scores(row) if row["step"] == 0 else score_mask_only())


def stage_start_scores(history: list[dict], stage: str) -> dict[str, float] | None:
    """Per-task accuracies of a stage's step-0 row (logged when the run evaluates along the way), else None."""
    for row in history:
        if row.get("stage") == stage and row.get("step") == 0 and "avg_accuracy" in row:
            return row_scores(row)
    return None


def expected_mask(logits: Tensor) -> Tensor:
    """σ(x): the expected mask, a deterministic diagnostic beside the sampled headline mask (draws nothing)."""
    return evaluation_mask(logits, "expected")


def meta_stage_columns(
    context: RunContext, logits: Tensor, coefficients: Callable[[], Tensor], mask_only_flat: Callable[[], Tensor]
) -> dict:
    """Concrete AdaMerging's meta-stage history columns, as :meth:`RunContext.optimise`'s ``log_fn`` and
    ``eval_extra_fn``: the mask's density and where w' sits (``coefficients()``) on every logged row; the accuracy of
    ``mask_only_flat()`` (the evaluation mask at the initial coefficients) on every evaluated row."""
    return {
        "log_fn": lambda: {**density_row(context.shard.gather(logits)), **coefficient_row(coefficients())},
        "eval_extra_fn": lambda row: mask_only_row(row, lambda: context.scores(mask_only_flat)),
    }


def mask_only_record(context: RunContext, coefficients: float, mask_only_flat: Callable[[], Tensor]) -> dict:
    """Concrete AdaMerging's mask-only effect: the kept mask at the initial coefficients, i.e. stage 2 at step 0 (read
    from the history when that row was evaluated, else scored now on ``mask_only_flat()``)."""
    scores = stage_start_scores(context.history, "tta") or context.diagnostic_scores(mask_only_flat)
    return {"coefficients": float(coefficients), "final_model": False, "scores": scores}


def concrete_extras(
    context: RunContext,
    logits: Tensor,
    record: dict,
    mask_only: dict,
    merged_under: Callable[[Tensor], Tensor],
    coefficients: Tensor | None = None,
) -> dict:
    """A Concrete run's extras: the learned mask (:func:`mask_extras`), the final coefficients (when they were learned),
    the final mask's ``record`` (:func:`eval_mask_record`), the ``mask_only`` effect, and the scores of the final model
    under the expected mask (``merged_under(mask)``: this rank's block of the final merge under this rank's ``mask``)."""
    whole = context.shard.gather(logits)
    expected = context.shard.local(expected_mask(whole))
    return {
        **mask_extras(whole, context.layout),
        **({} if coefficients is None else {"coefficients": coefficients.cpu()}),
        "eval_mask": record,
        "mask_only": mask_only,
        "expected_mask_scores": context.diagnostic_scores(lambda: context.shard.gather(merged_under(expected))),
    }
