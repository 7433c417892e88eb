"""Evaluation during a build: logits, accuracy, the entropy premise, and the manifest's zoo geometry."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data import mini
from .config import SPLITS, MiniConfig
from .model import to_pixel_values


@torch.no_grad()
def predict_logits(
    encoder, params: Mapping[str, Tensor] | None, head: Tensor, images: Tensor, batch: int = 500
) -> Tensor:
    """Logits of a (possibly merged) encoder on uint8 images."""
    from ..functional import forward

    out = [
        forward(encoder, params, to_pixel_values(images[i : i + batch])) @ head.T for i in range(0, len(images), batch)
    ]
    return torch.cat(out)


def entropy_premise(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """Does low entropy go with correct predictions? Spearman(entropy, error), mean entropy of correct/wrong, AUROC."""
    from scipy.stats import spearmanr

    logp = logits.log_softmax(dim=-1)
    ent = -(logp.exp() * logp).sum(dim=-1).numpy()
    err = (logits.argmax(dim=-1) != labels).numpy().astype(np.float64)
    wrong, right = ent[err == 1], ent[err == 0]
    rho = float(spearmanr(ent, err).statistic) if 0 < err.sum() < len(err) else float("nan")
    # AUROC of entropy as an error detector = P(entropy of a wrong > entropy of a correct prediction)
    ranks = np.argsort(np.argsort(ent, kind="stable"), kind="stable") + 1.0
    auroc = (
        float((ranks[err == 1].sum() - len(wrong) * (len(wrong) + 1) / 2) / (len(wrong) * len(right)))
        if len(wrong) and len(right)
        else float("nan")
    )
    return {
        "spearman_entropy_error": rho,
        "entropy_correct": float(right.mean()) if len(right) else float("nan"),
        "entropy_wrong": float(wrong.mean()) if len(wrong) else float("nan"),
        "entropy_mean": float(ent.mean()),
        "auroc_entropy_error": auroc,
        "accuracy": 100.0 * int((err == 0).sum()) / len(err),
    }


def top1_accuracy(logits: Tensor, labels: Tensor) -> float:
    """Percent correct, computed from integer counts (exactly reproducible)."""
    return 100.0 * int((logits.argmax(-1) == labels).sum()) / len(labels)


def with_average(scores: Mapping[str, float]) -> dict[str, float]:
    out = dict(scores)
    out["average"] = float(np.mean(list(scores.values())))
    return out


def evaluate_zoo(encoder, theta0, finetuned, heads, data, cfg: MiniConfig, progress: bool):
    """Zero-shot, individual and task-arithmetic accuracy per split, and the entropy premise on the TA model."""
    ta = {k: theta0[k] + cfg.ta_scaling * sum(finetuned[t][k] - theta0[k] for t in cfg.tasks) for k in theta0}
    accuracy = {s: {"zero_shot": {}, "individual": {}, "task_arithmetic": {}} for s in ("validation", "test")}
    premise = {s: {} for s in ("validation", "test")}
    for task in tqdm(cfg.tasks, desc="zoo: evaluate", disable=not progress):
        for split in ("validation", "test"):
            x, y = (torch.from_numpy(a) for a in data[task][split])
            accuracy[split]["zero_shot"][task] = top1_accuracy(predict_logits(encoder, theta0, heads[task], x), y)
            accuracy[split]["individual"][task] = top1_accuracy(
                predict_logits(encoder, finetuned[task], heads[task], x), y
            )
            ta_logits = predict_logits(encoder, ta, heads[task], x)
            accuracy[split]["task_arithmetic"][task] = top1_accuracy(ta_logits, y)
            premise[split][task] = entropy_premise(ta_logits, y)
    accuracy = {s: {m: with_average(v) for m, v in d.items()} for s, d in accuracy.items()}
    for s in premise:
        premise[s]["average"] = {
            k: float(np.nanmean([premise[s][t][k] for t in cfg.tasks])) for k in premise[s][cfg.tasks[0]]
        }
    return accuracy, premise


@torch.no_grad()
def _embed(encoder, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """Normalised image embeddings of the (pre-trained) encoder for uint8 images."""
    x = torch.from_numpy(images)
    return torch.cat([encoder(to_pixel_values(x[i : i + batch])) for i in range(0, len(x), batch)]).numpy()


def _geometry(encoder, theta0, finetuned, heads, data, accuracy, seed: int, probe_train: int = 3000) -> dict:
    """The manifest's "geometry" (concrete_subspace.geometry): linear probe vs zero-shot of theta0, task-vector norms and
    cosines, cross-transfer (validation), and the task-arithmetic path with its entropy premise (validation and test)."""
    from .. import geometry

    def predict(params, task, x):
        return predict_logits(encoder, params, heads[task], x)

    probe = {}
    for task in finetuned:
        (xtr, ytr), (xva, yva), (xte, yte) = (data[task][s] for s in SPLITS)
        keep = mini.derive_rng(seed, task, "probe").permutation(len(ytr))[:probe_train]
        probe[task] = geometry.linear_probe(
            (_embed(encoder, xtr[keep]), ytr[keep]), (_embed(encoder, xva), yva), (_embed(encoder, xte), yte)
        )
    probe["average"] = {s: float(np.mean([probe[t][s] for t in finetuned])) for s in ("validation", "test")}
    tensors = {
        s: {t: tuple(torch.from_numpy(a) for a in data[t][s]) for t in finetuned} for s in ("validation", "test")
    }
    paths = {s: geometry.ta_path(predict, theta0, finetuned, tensors[s]) for s in tensors}
    cross = geometry.cross_transfer(
        predict, theta0, finetuned, tensors["validation"], accuracy["validation"]["zero_shot"]
    )
    return {
        "linear_probe": probe,
        "task_vectors": geometry.task_vector_geometry(theta0, finetuned),
        "cross_transfer": {"split": "validation", "scaling": 0.3, "matrix": cross, **geometry.cross_summary(cross)},
        "ta_path": paths,
        "entropy_premise_along_lambda": {s: geometry.entropy_premise_holds(p) for s, p in paths.items()},
    }
