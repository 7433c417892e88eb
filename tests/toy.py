"""A tiny, fast MergeProblem for unit tests: an MLP encoder, 3 tasks with frozen random heads, fine-tuned in-test.

Run as a script (``python tests/toy.py '{"checkpoint_dir": ..., "out": ...}'``) it runs one method on the toy problem
and saves the result: the subprocess kill-and-resume tests restart exactly this command.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import torch
from torch import nn

from concrete_subspace.data.batching import step_indices
from concrete_subspace.problem import MergeProblem


class Encoder(nn.Module):
    def __init__(self, dim_in: int = 8, hidden: int = 16, dim_out: int = 8):
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.fc2 = nn.Linear(hidden, dim_out)
        self.register_buffer("position_ids", torch.arange(4))  # an integer buffer: never merged

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def make_toy_problem(
    num_tasks: int = 3, seed: int = 0, finetune_steps: int = 60, n: int = 96, batch_size: int = 16
) -> MergeProblem:
    """Three tasks over one random MLP encoder, each fine-tuned for ``finetune_steps`` Adam steps (about a second)."""
    g = torch.Generator().manual_seed(seed)
    model = Encoder()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    model.eval().requires_grad_(False)
    pretrained = {k: v.detach().clone() for k, v in model.named_parameters()}
    tasks = tuple(f"task{i}" for i in range(num_tasks))
    heads, data, finetuned = {}, {}, {}
    for task in tasks:
        heads[task] = torch.randn(3, 8, generator=g)
        x = torch.randn(n, 8, generator=g)
        teacher = torch.randn(8, 3, generator=g)
        y = (x @ teacher).argmax(-1)
        data[task] = (x, y)
        params = {k: v.clone().requires_grad_(True) for k, v in pretrained.items()}
        opt = torch.optim.Adam(params.values(), lr=0.05)
        for _ in range(finetune_steps):
            logits = torch.func.functional_call(model, params, (x,)) @ heads[task].T
            loss = nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        finetuned[task] = {k: v.detach().clone() for k, v in params.items()}

    def task_logits(task, features):
        if task not in heads:
            raise KeyError(f"task {task!r} has no head; known tasks: {list(heads)}")
        return features @ heads[task].T

    def unlabeled_batch(task, step):
        return data[task][0][step_indices(n, batch_size, step, seed)]

    def eval_batches(task):
        x, y = data[task]
        for s in range(0, n, 32):
            yield x[s : s + 32], y[s : s + 32]

    return MergeProblem(
        model=model,
        pretrained=pretrained,
        task_names=tasks,
        load_finetuned=lambda t: {k: v.clone() for k, v in finetuned[t].items()},
        task_logits=task_logits,
        unlabeled_batch=unlabeled_batch,
        eval_batches=eval_batches,
        train_batches=eval_batches,
    )


def pausing(problem: MergeProblem, after_calls: int, marker: str) -> MergeProblem:
    """``problem`` whose data source, on call ``after_calls`` + 1, touches ``marker`` and sleeps (to be killed there)."""
    calls = [0]

    def unlabeled_batch(task, step):
        calls[0] += 1
        if calls[0] > after_calls:
            open(marker, "w").close()
            time.sleep(3600)
        return problem.unlabeled_batch(task, step)

    return dataclasses.replace(problem, unlabeled_batch=unlabeled_batch)


def run_toy_job(
    out: str,
    method: str = "layer_wise_concrete_adamerging",
    pause_after_calls: int | None = None,
    pause_marker: str | None = None,
    **params,
) -> None:
    """Run ``method`` on the toy problem (one thread, no progress bar) and save state + history atomically to ``out``.

    With ``pause_after_calls`` the job stops mid-step at that data call (see :func:`pausing`), waiting to be killed.
    """
    from concrete_subspace.checkpoint import save_checkpoint
    from concrete_subspace.registry import run_method

    torch.set_num_threads(1)
    problem = make_toy_problem()
    if pause_after_calls is not None:
        problem = pausing(problem, pause_after_calls, pause_marker)
    result = run_method(method, problem, progress=False, **params)
    save_checkpoint(out, {"state": result.state, "history": result.history})


if __name__ == "__main__":
    run_toy_job(**json.loads(sys.argv[1]))


def tiny_vision(seed: int):
    """A randomly initialised two-head, one-layer HF CLIPVisionModel (16x16 images): a real checkpoint class in ms."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
        projection_dim=8,
    )
    return CLIPVisionModel(config)
