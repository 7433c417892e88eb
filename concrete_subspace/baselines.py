"""Data-hungry baselines: Fisher merging (Matena & Raffel, 2022) and RegMean (Jin et al., 2023).

Both read labelled-or-not training inputs from ``problem.train_batches`` (labels are not used: the Fisher uses
each model's own predictions) and load one fine-tuned model at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .evaluation import to_device
from .functional import forward
from .problem import MergeProblem, MergeResult
from .task_vectors import check_compatible, check_finite


def _train_inputs(problem: MergeProblem, task: str, num_examples: int, method: str) -> Iterator[Any]:
    """Training inputs of ``task`` on the problem's device, up to about ``num_examples`` examples."""
    if problem.train_batches is None:
        raise ValueError(f"{method} needs training data: this MergeProblem has no train_batches")
    seen = 0
    for inputs, _ in problem.train_batches(task):
        if seen >= num_examples:
            break
        inputs = to_device(inputs, problem.device)
        seen += len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
        yield inputs
    if seen == 0:
        raise ValueError(f"{method}: task {task!r} has no training examples")


def _examples(inputs: Any) -> Iterator[Any]:
    """Split a batch (tensor or dict of tensors) into single-example batches."""
    n = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
    for i in range(n):
        yield {k: v[i : i + 1] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[i : i + 1]


def _finetuned(problem: MergeProblem, task: str) -> dict[str, Tensor]:
    state = problem.load_finetuned(task)
    check_compatible(problem.pretrained, state, name=f"fine-tuned model {task!r}")
    check_finite(state, name=f"fine-tuned model {task!r}")
    return {k: state[k].to(problem.device) for k in problem.pretrained}


def diagonal_fisher(
    problem: MergeProblem, task: str, params: dict[str, Tensor], num_examples: int
) -> dict[str, Tensor]:
    """Empirical diagonal Fisher E[(∇ log p(ŷ|x))²], ŷ the model's own prediction, one example at a time."""
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    fisher = {k: torch.zeros_like(v) for k, v in leaves.items()}
    count = 0
    for inputs in _train_inputs(problem, task, num_examples, "fisher_merging"):
        for example in _examples(inputs):
            if count >= num_examples:
                break
            log_p = torch.log_softmax(
                problem.task_logits(task, forward(problem.model, leaves, example)).float(), dim=-1
            )
            grads = torch.autograd.grad(log_p[0, log_p[0].argmax()], list(leaves.values()), allow_unused=True)
            for key, grad in zip(leaves, grads):
                if grad is not None:
                    fisher[key] += grad.detach() ** 2
            count += 1
    return {k: v / count for k, v in fisher.items()}


def fisher_merging(
    problem: MergeProblem, *, num_examples: int = 256, minimal_fisher_weight: float = 1e-6, progress: bool = True
) -> MergeResult:
    """θ = Σ_i F_i θ_i / Σ_i F_i with diagonal Fisher F_i (+ a floor so unused parameters average uniformly)."""
    params = {"num_examples": num_examples, "minimal_fisher_weight": minimal_fisher_weight}
    numerator = {k: torch.zeros_like(v) for k, v in problem.pretrained.items()}
    denominator = {k: torch.zeros_like(v) for k, v in problem.pretrained.items()}
    for task in tqdm(problem.task_names, desc="fisher", disable=not progress):
        state = _finetuned(problem, task)
        fisher = diagonal_fisher(problem, task, state, num_examples)
        for key in numerator:
            weight = fisher[key] + minimal_fisher_weight
            numerator[key] += weight * state[key]
            denominator[key] += weight
        del state, fisher
    return MergeResult({k: numerator[k] / denominator[k] for k in numerator}, params)


def reduce_non_diagonal(gram: Tensor, ratio: float) -> Tensor:
    """RegMean's regulariser: scale the off-diagonal entries of a Gram matrix by ``ratio`` (diagonal kept)."""
    off_diagonal = torch.full_like(gram, ratio)
    off_diagonal.fill_diagonal_(1.0)
    return gram * off_diagonal


def input_grams(
    problem: MergeProblem, task: str, params: dict[str, Tensor], linear: dict[str, nn.Linear], num_examples: int
) -> dict[str, Tensor]:
    """Mean Gram matrix XᵀX / n of the inputs of every merged linear layer, under ``params``."""
    grams = {name: torch.zeros(m.in_features, m.in_features, device=problem.device) for name, m in linear.items()}
    counts = dict.fromkeys(linear, 0)

    def hook(name: str):
        def record(module, args, output):
            x = args[0].detach().reshape(-1, module.in_features).float()
            grams[name] += x.T @ x
            counts[name] += x.shape[0]

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in linear.items()]
    try:
        with torch.no_grad():
            for inputs in _train_inputs(problem, task, num_examples, "regmean"):
                forward(problem.model, params, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return {name: grams[name] / max(counts[name], 1) for name in grams}


def regmean(
    problem: MergeProblem, *, num_examples: int = 256, reduce_non_diagonal_ratio: float = 0.6, progress: bool = True
) -> MergeResult:
    """RegMean: each linear weight W* = (Σ_i W_i G_i)(Σ_i G_i)⁻¹ from input Grams G_i; other tensors averaged."""
    params = {"num_examples": num_examples, "reduce_non_diagonal_ratio": reduce_non_diagonal_ratio}
    linear = {
        name: m
        for name, m in problem.model.named_modules()
        if isinstance(m, nn.Linear) and f"{name}.weight" in problem.pretrained
    }
    weight_keys = {f"{name}.weight": name for name in linear}
    sum_gram = {name: 0.0 for name in linear}
    sum_gram_weight = {name: 0.0 for name in linear}
    sum_other = {k: torch.zeros_like(v) for k, v in problem.pretrained.items() if k not in weight_keys}
    for task in tqdm(problem.task_names, desc="regmean", disable=not progress):
        state = _finetuned(problem, task)
        grams = input_grams(problem, task, state, linear, num_examples)
        for name, gram in grams.items():
            gram = reduce_non_diagonal(gram, reduce_non_diagonal_ratio)
            sum_gram[name] = sum_gram[name] + gram
            sum_gram_weight[name] = sum_gram_weight[name] + gram @ state[f"{name}.weight"].float().T
        for key in sum_other:
            sum_other[key] += state[key]
        del state, grams
    merged = {k: v / len(problem.task_names) for k, v in sum_other.items()}
    for key, name in weight_keys.items():
        solution = torch.linalg.lstsq(sum_gram[name], sum_gram_weight[name]).solution
        merged[key] = solution.T.to(problem.pretrained[key].dtype)
    return MergeResult({k: merged[k] for k in problem.pretrained}, params)
