"""Validation probes of the mini-text zoo that chose text_zoo.TEXT_DEFAULTS (rows: lab-notes/zoo_text_sweep.csv).

Run ``python benchmarks/text_sweep.py [--out lab-notes/zoo_text_sweep.csv]`` after building the zoo. Everything
here adapts on and scores the VALIDATION split; the test split is only used by notebook 02. Each row: the probe,
method, parameters, average validation accuracy, per-task accuracies, wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from concrete_subspace.evaluation import average, evaluate
from concrete_subspace.registry import run_method

LAMBDAS = (0.0, 0.2, 0.3, 0.4, 0.6, 1.0)
# The grid that chose TEXT_DEFAULTS: the paper's lr (1e-3) and larger ones (the coefficients and mask logits barely
# move at 1e-3 in 20 steps), at step counts that fit notebook 02's 15-minute budget.
TIES_PROBES: tuple[dict, ...] = tuple({"scaling": s, "density": d} for s in (0.2, 0.3, 0.5) for d in (0.2, 0.5))
PROBES: tuple[tuple[str, dict], ...] = (
    ("concrete_task_arithmetic", {"scaling": 0.2, "lr": 1e-3, "steps": 20}),
    ("concrete_task_arithmetic", {"scaling": 0.2, "lr": 1e-2, "steps": 20}),
    ("concrete_task_arithmetic", {"scaling": 0.2, "lr": 1e-2, "steps": 40}),
    ("layer_wise_adamerging", {"lr": 1e-3, "steps": 20}),
    ("layer_wise_adamerging", {"lr": 1e-2, "steps": 30}),
    ("layer_wise_adamerging", {"lr": 3e-2, "steps": 30}),
    ("layer_wise_adamerging", {"lr": 3e-2, "steps": 60}),
    ("layer_wise_concrete_adamerging", {"outer_lr": 1e-3, "meta_steps": 10, "tta_lr": 1e-3, "tta_steps": 20}),
    ("layer_wise_concrete_adamerging", {"outer_lr": 1e-3, "meta_steps": 10, "tta_lr": 3e-2, "tta_steps": 40}),
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="lab-notes/zoo_text_sweep.csv")
    parser.add_argument("--zoo", default=None, help="zoo directory (default: the cached seed-0 mini-text zoo)")
    args = parser.parse_args(argv)
    from concrete_subspace import experiments as ex
    from concrete_subspace import text_zoo as tz

    torch.set_num_threads(1)
    zoo_dir = Path(args.zoo) if args.zoo else tz.default_text_zoo_dir(0)
    problem = tz.load_text_zoo_problem(zoo_dir, split="validation")
    rows = []

    def record(probe: str, method: str, params: dict, scores: dict, t0: float, c0: float, **extra) -> None:
        rows.append(
            {
                "probe": probe,
                "method": method,
                "params": json.dumps(params),
                "avg": round(average(scores), 2),
                **{f"acc/{k}": round(v, 2) for k, v in scores.items()},
                **extra,
                "wall_s": round(time.perf_counter() - t0, 1),
                "cpu_s": round(time.process_time() - c0, 1),
            }
        )
        print(f"{probe:>10} {method} {params}: avg {average(scores):.2f}", flush=True)
        pd.DataFrame(rows).to_csv(args.out, index=False)  # rewritten after every probe: a killed sweep keeps its rows

    t0, c0 = time.perf_counter(), time.process_time()
    sweep = ex.lambda_sweep(problem, LAMBDAS)
    for scaling, group in sweep[sweep["task"] != "average"].groupby("scaling"):
        scores = dict(zip(group["task"], group["accuracy"]))
        record(
            "lambda", "task_arithmetic", {"scaling": scaling}, scores, t0, c0, entropy=round(group["entropy"].mean(), 4)
        )
    for method, params in [("ties_merging", p) for p in TIES_PROBES] + list(PROBES):
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_method(method, problem, **params)
        probe = "data-free" if method == "ties_merging" else "test-time"
        record(probe, method, params, evaluate(problem, result.state), t0, c0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
