"""What explains a zoo's merging results: the geometry recorded in a mini zoo's manifest (zoo v2, issue 11).

- linear probe vs zero-shot accuracy of the pre-trained model per task: is the knowledge in the features
  (high probe) but not in the text heads (low zero-shot)? That is the regime of CLIP on the paper's tasks.
- ||tau_i|| / ||theta0|| and the pairwise cosines of the task vectors tau_i = theta_i - theta0.
- cross-transfer: accuracy of theta0 + 0.3 tau_j on task i minus zero-shot on task i (does one expert hurt others?).
- the task-arithmetic path theta0 + lambda sum_i tau_i: accuracy and mean prediction entropy along lambda
  (the entropy premise of test-time adaptation: entropy should fall where accuracy rises).

Pure functions of (encoder, theta0, task states, heads, images, labels); numbers in percent, entropies in nats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

TA_PATH_LAMBDAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
PROBE_C = (0.1, 1.0, 10.0)


def linear_probe(
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray] | None = None,
    c_values: Sequence[float] = PROBE_C,
) -> dict:
    """L2 logistic regression on frozen features: C chosen on ``validation`` over ``c_values``, then scored on ``test``.

    Returns {"C", "validation", "test"} (accuracies in percent; "test" is None without a test split).
    """
    from sklearn.linear_model import LogisticRegression

    best = None
    for c in c_values:
        clf = LogisticRegression(C=c, max_iter=2000).fit(*train)
        acc = 100.0 * float((clf.predict(validation[0]) == validation[1]).mean())
        if best is None or acc > best[0]:
            best = (acc, float(c), clf)
    acc, c, clf = best
    scored = 100.0 * float((clf.predict(test[0]) == test[1]).mean()) if test is not None else None
    return {"C": c, "validation": acc, "test": scored}


def flat(state: Mapping[str, Tensor], keys: Sequence[str]) -> Tensor:
    """The float parameters of ``state`` at ``keys`` as one fp32 vector."""
    return torch.cat([state[k].detach().float().flatten() for k in keys])


def task_vector_geometry(theta0: Mapping[str, Tensor], finetuned: Mapping[str, Mapping[str, Tensor]]) -> dict:
    """||tau_i|| / ||theta0|| per task and their mean, and the pairwise cosine matrix with its off-diagonal mean."""
    keys = list(theta0)
    tasks = list(finetuned)
    base = flat(theta0, keys)
    taus = torch.stack([flat(finetuned[t], keys) - base for t in tasks])
    unit = F.normalize(taus, dim=1)
    cos = unit @ unit.T
    off = cos[~torch.eye(len(tasks), dtype=torch.bool)]
    ratio = (taus.norm(dim=1) / base.norm()).tolist()
    return {
        "tau_norm_ratio": dict(zip(tasks, ratio)),
        "tau_norm_ratio_mean": float(np.mean(ratio)),
        "cosine": {a: dict(zip(tasks, row)) for a, row in zip(tasks, cos.tolist())},
        "cosine_mean": float(off.mean()) if len(off) else float("nan"),
    }


def _entropy_mean(logits: Tensor) -> float:
    logp = logits.log_softmax(dim=-1)
    return float(-(logp.exp() * logp).sum(dim=-1).mean())


def ta_path(
    predict,
    theta0: Mapping[str, Tensor],
    finetuned: Mapping[str, Mapping[str, Tensor]],
    data: Mapping[str, tuple[Tensor, Tensor]],
    lambdas: Sequence[float] = TA_PATH_LAMBDAS,
) -> list[dict]:
    """Accuracy and mean entropy of theta0 + lambda sum tau along ``lambdas``; ``predict(params, task, x)`` -> logits."""
    summed = {k: sum(finetuned[t][k] - theta0[k] for t in finetuned) for k in theta0}
    rows = []
    for lam in lambdas:
        merged = {k: theta0[k] + lam * summed[k] for k in theta0}
        acc, ent = {}, {}
        for task, (x, y) in data.items():
            logits = predict(merged, task, x)
            acc[task] = 100.0 * int((logits.argmax(-1) == y).sum()) / len(y)
            ent[task] = _entropy_mean(logits)
        rows.append(
            {
                "lambda": float(lam),
                "accuracy": float(np.mean(list(acc.values()))),
                "entropy": float(np.mean(list(ent.values()))),
                "accuracy_per_task": acc,
                "entropy_per_task": ent,
            }
        )
    return rows


def entropy_premise_holds(path: Sequence[Mapping[str, float]]) -> dict:
    """From lambda 0 to the most accurate lambda of ``path``: did accuracy rise while the mean entropy fell?"""
    best = max(path, key=lambda r: r["accuracy"])
    start = path[0]
    return {
        "best_lambda": best["lambda"],
        "accuracy_gain": best["accuracy"] - start["accuracy"],
        "entropy_change": best["entropy"] - start["entropy"],
        "holds": bool(best["accuracy"] > start["accuracy"] and best["entropy"] < start["entropy"]),
    }


def cross_transfer(
    predict,
    theta0: Mapping[str, Tensor],
    finetuned: Mapping[str, Mapping[str, Tensor]],
    data: Mapping[str, tuple[Tensor, Tensor]],
    zero_shot: Mapping[str, float],
    scaling: float = 0.3,
) -> dict:
    """{source: {target: accuracy of theta0 + scaling tau_source on target minus zero-shot on target}} (target != source)."""
    out = {}
    for source in finetuned:
        merged = {k: theta0[k] + scaling * (finetuned[source][k] - theta0[k]) for k in theta0}
        out[source] = {}
        for target, (x, y) in data.items():
            if target != source:
                logits = predict(merged, target, x)
                out[source][target] = 100.0 * int((logits.argmax(-1) == y).sum()) / len(y) - zero_shot[target]
    return out


def cross_summary(cross: Mapping[str, Mapping[str, float]]) -> dict:
    """Mean of the cross-transfer matrix and how many pairs are at or above zero-shot."""
    values = [v for row in cross.values() for v in row.values()]
    return {"mean": float(np.mean(values)), "non_negative": int(sum(v >= 0 for v in values)), "pairs": len(values)}
