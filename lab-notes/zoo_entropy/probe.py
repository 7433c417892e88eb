"""Issue 26 item 4: does the zoo's entropy track accuracy, and does the frozen heads' temperature change that?

Lever: the zero-shot heads are text embeddings x the pre-training's learned logit scale (19.9 on zoo v3; CLIP's is 100).
Multiplying every head by ``k`` at test time leaves every prediction (argmax) unchanged and changes only the entropy
the test-time methods minimise. VALIDATION split only.

    python lab-notes/zoo_entropy/probe.py coupling ZOO --k 0.5 1 2 5        # TA along λ: accuracy and entropy
    python lab-notes/zoo_entropy/probe.py method ZOO NAME k=v ... --k 5     # one method at head scale k
Each run appends one JSON line to lab-notes/zoo_entropy/probes_validation.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from concrete_subspace import text_zoo, zoo
from concrete_subspace.evaluation import average, evaluate, to_device
from concrete_subspace.functional import forward
from concrete_subspace.loop import entropy
from concrete_subspace.registry import get_method, run_method

OUT = Path(__file__).with_name("probes_validation.jsonl")
LAMBDAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)


def scaled(problem, k: float):
    """The same problem with every frozen head multiplied by k (predictions unchanged, entropy changed)."""
    if k == 1.0:
        return problem
    base = problem.task_logits
    return dataclasses.replace(problem, task_logits=lambda task, features: k * base(task, features))


@torch.no_grad()
def mean_entropy(problem, params, ks) -> dict[float, dict[str, float]]:
    """Mean prediction entropy on each task's evaluation data, at every head scale in ks (one forward per batch)."""
    out = {k: {} for k in ks}
    for task in problem.task_names:
        sums = {k: 0.0 for k in ks}
        n = 0
        for inputs, _ in problem.eval_batches(task):
            logits = problem.task_logits(task, forward(problem.model, params, to_device(inputs, problem.device)))
            for k in ks:
                sums[k] += float(entropy(k * logits.float()).sum())
            n += logits.shape[0]
        for k in ks:
            out[k][task] = sums[k] / n
    return out


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def load(args, seed: int = 0):
    """The zoo's validation problem (image zoo, or the mini-text zoo with --text)."""
    loader = text_zoo.load_text_zoo_problem if args.text else zoo.load_zoo_problem
    return loader(args.zoo, split="validation", seed=seed)


def cmd_coupling(args) -> None:
    problem = load(args)
    rows = []
    for lam in LAMBDAS:
        state = run_method("task_arithmetic", problem, scaling=lam).state
        acc = evaluate(problem, state)
        ent = mean_entropy(problem, state, args.k)
        rows.append((lam, acc, ent))
        print(
            f"λ {lam}: acc {average(acc):.2f} "
            + " ".join(f"H@k{k} {np.mean(list(ent[k].values())):.3f}" for k in args.k)
        )
    summary = {}
    for k in args.k:
        per_task = {}
        for t in problem.task_names:
            accs = [r[1][t] for r in rows]
            ents = [r[2][k][t] for r in rows]
            per_task[t] = {
                "spearman_entropy_vs_accuracy": spearman(ents, accs),  # -1: lower entropy <-> higher accuracy
                "lambda_min_entropy": LAMBDAS[int(np.argmin(ents))],
                "lambda_max_accuracy": LAMBDAS[int(np.argmax(accs))],
                "entropy_drop_0_to_best": ents[0] - ents[int(np.argmax(accs))],
            }
        avg_acc = [average(r[1]) for r in rows]
        avg_ent = [float(np.mean(list(r[2][k].values()))) for r in rows]
        summary[str(k)] = {
            "spearman_avg": spearman(avg_ent, avg_acc),
            "mean_task_spearman": float(np.mean([v["spearman_entropy_vs_accuracy"] for v in per_task.values()])),
            "tasks_min_entropy_at_best_lambda_pm0.1": sum(
                abs(v["lambda_min_entropy"] - v["lambda_max_accuracy"]) <= 0.1 + 1e-9 for v in per_task.values()
            ),
            "avg_entropy_along_lambda": [round(e, 4) for e in avg_ent],
            "per_task": per_task,
        }
        print(
            f"k {k}: spearman(avg) {summary[str(k)]['spearman_avg']:.2f}, mean per-task "
            f"{summary[str(k)]['mean_task_spearman']:.2f}, tasks whose min-entropy λ is within 0.1 of best λ: "
            f"{summary[str(k)]['tasks_min_entropy_at_best_lambda_pm0.1']}/{len(problem.task_names)}"
        )
    row = {
        "probe": "coupling",
        "zoo": Path(args.zoo).name,
        "zoo_dir": str(args.zoo),  # the name alone is ambiguous across probe zoos (tag v3signs)
        "lambdas": LAMBDAS,
        "avg_accuracy": [round(average(r[1]), 2) for r in rows],
        "by_k": summary,
    }
    with open(OUT, "a") as f:
        f.write(json.dumps(row) + "\n")


def cmd_method(args) -> None:
    params = {kv.split("=", 1)[0]: json.loads(kv.split("=", 1)[1]) for kv in args.params}
    t0 = time.perf_counter()
    with zoo.deterministic():
        problem = scaled(load(args, args.seed), args.k[0])
        if "seed" in get_method(args.name).defaults:
            params["seed"] = args.seed
        result = run_method(args.name, problem, eval_every=args.eval_every, **params)
        scores = evaluate(problem, result.state)
    curve = [(r.get("stage"), r["step"], round(r["avg_accuracy"], 2)) for r in result.history if "avg_accuracy" in r]
    extras = {k: v for k, v in result.extras.items() if k in ("mask_only", "logit_stats", "expected_mask_scores")}
    row = {
        "probe": "method",
        "zoo": Path(args.zoo).name,
        "zoo_dir": str(args.zoo),  # the name alone is ambiguous across probe zoos (tag v3signs)
        "name": args.name,
        "k": args.k[0],
        "params": params,
        "seed": args.seed,
        "average": round(average(scores), 2),
        "validation": scores,
        "curve": curve,
        "extras": json.loads(json.dumps(extras, default=str)),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps({k: row[k] for k in ("name", "k", "params", "average", "curve", "seconds")}))
    with open(OUT, "a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=("coupling", "method"))
    p.add_argument("zoo")
    p.add_argument("name", nargs="?")
    p.add_argument("params", nargs="*")
    p.add_argument("--k", type=float, nargs="+", default=[1.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text", action="store_true", help="ZOO is a mini-text zoo")
    p.add_argument("--eval-every", type=int, default=100)
    args = p.parse_args()
    torch.set_num_threads(1)
    {"coupling": cmd_coupling, "method": cmd_method}[args.cmd](args)


if __name__ == "__main__":
    main()
