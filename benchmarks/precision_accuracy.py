"""Mini-zoo test accuracy after the default steps: fp32 vs bf16 (and per-task vs batched), over seeds (issue 12).

Each (method, seed, precision, forward mode) runs the registry method with the mini defaults of
``experiments.method_params`` (no in-run evaluation), then ONE fp32 evaluation of the merged state on the test split.
The seed sets both the test-time batch order (problem seed) and the method's mask-sampling generator. Also records
the wall and process CPU time of each run (1 thread).

    nice -n 10 .venv/bin/python benchmarks/precision_accuracy.py --zoo $CONCRETE_SUBSPACE_CACHE/zoo/mini-v1-seed0 \
        --seeds 0 1 2 --out benchmarks/results/precision_accuracy_mini.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def summarise(rows: list[dict]) -> list[dict]:
    """Mean, sample standard deviation and range of the average accuracy per (method, precision, forward mode)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["precision"], r["forward_mode"]), []).append(r)
    out = []
    for (method, precision, mode), rs in groups.items():
        accs = [r["avg_accuracy"] for r in rs]
        out.append(
            {
                "method": method,
                "precision": precision,
                "forward_mode": mode,
                "seeds": [r["seed"] for r in rs],
                "avg_accuracy_mean": statistics.mean(accs),
                "avg_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "avg_accuracy_min": min(accs),
                "avg_accuracy_max": max(accs),
                "cpu_seconds_mean": statistics.mean(r["cpu_seconds"] for r in rs),
            }
        )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["concrete_task_arithmetic", "layer_wise_adamerging", "layer_wise_concrete_adamerging"],
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=["fp32:batched", "bf16:batched"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch

    from benchmarks.harness import parse_config, versions
    from concrete_subspace import zoo
    from concrete_subspace.evaluation import average, evaluate
    from concrete_subspace.experiments import method_params
    from concrete_subspace.registry import run_method

    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        problem = zoo.load_zoo_problem(args.zoo, split="test", batch_size=16, seed=seed)
        for method in args.methods:
            for config in args.configs:
                precision, mode = parse_config(config)
                params = {
                    **method_params(method, scale="mini", precision=precision),
                    "eval_every": 0,
                    "seed": seed,
                    "forward_mode": mode,
                    "progress": False,
                }
                wall, cpu = time.perf_counter(), time.process_time()
                result = run_method(method, problem, **params)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                scores = evaluate(problem, result.state)
                rows.append(
                    {
                        "method": method,
                        "seed": seed,
                        "precision": precision,
                        "forward_mode": mode,
                        "avg_accuracy": average(scores),
                        "scores": scores,
                        "wall_seconds": wall,
                        "cpu_seconds": cpu,
                        "params": {k: v for k, v in params.items() if k != "progress"},
                    }
                )
                print(f"{method:32} seed {seed} {config:13} avg {average(scores):6.2f}  cpu {cpu:7.1f} s", flush=True)
                args.out.write_text(
                    json.dumps(
                        {
                            "rows": rows,
                            "summary": summarise(rows),
                            "zoo": str(args.zoo),
                            "threads": args.threads,
                            "versions": versions(),
                        },
                        indent=1,
                        default=str,
                    )
                )
    for s in summarise(rows):
        print(
            f"{s['method']:32} {s['precision']} {s['forward_mode']:8} {s['avg_accuracy_mean']:6.2f} ± {s['avg_accuracy_std']:.2f} "
            f"(min {s['avg_accuracy_min']:.2f}, max {s['avg_accuracy_max']:.2f}) cpu {s['cpu_seconds_mean']:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
