"""The validation-split sweep that chose zoo v1's ``zoo.MINI_DEFAULTS`` (never test labels; v2's: zoo_v2/probe.py).

    python benchmarks/mini_sweep.py ZOO_DIR --out lab-notes/zoo_sweep.csv [--methods NAME ...]

A research script (moved here from ``concrete_subspace.data``, issue 14). Every row is one (method, parameters,
steps) point: unlabeled batches AND accuracy both come from the validation split, as the paper does on test.
Step-count choices come from one run per learning rate evaluated every ``eval_every`` steps (the curve), so a sweep
costs a few CPU minutes per method. Results: docs/zoo.md.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

GRID: dict[str, list[dict[str, Any]]] = {
    "task_arithmetic": [{"scaling": s} for s in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)],
    "ties_merging": [{"scaling": s, "density": 0.2} for s in (0.3, 0.5, 0.7, 1.0)],
    "concrete_task_arithmetic": [{"lr": lr, "steps": 300, "eval_every": 100} for lr in (1e-3, 1e-2)],
    "layer_wise_adamerging": [{"lr": lr, "steps": 300, "eval_every": 100} for lr in (1e-3, 1e-2)],
    "layer_wise_concrete_adamerging": [
        {"outer_lr": olr, "meta_steps": 150, "tta_lr": 1e-2, "tta_steps": 200, "eval_every": 50} for olr in (1e-3, 1e-2)
    ],
}


def _rows(name: str, params: dict, result, seconds: float, evaluate_final) -> Iterable[dict]:
    """One row per evaluated point of a run (its curve), the final point included."""
    base = {k: v for k, v in params.items() if k not in ("eval_every", "progress")}
    curve = [r for r in result.history if "avg_accuracy" in r]
    for r in curve:
        yield {
            "method": name,
            **base,
            "stage": r.get("stage", ""),
            "at_step": r["step"],
            "val_avg": round(r["avg_accuracy"], 2),
            **{k[4:]: round(v, 2) for k, v in r.items() if k.startswith("acc/")},
            "seconds": round(seconds, 1),
        }
    if not curve:
        scores = evaluate_final(result.state)
        yield {
            "method": name,
            **base,
            "stage": "final",
            "at_step": params.get("steps", 0),
            "val_avg": round(sum(scores.values()) / len(scores), 2),
            **{k: round(v, 2) for k, v in scores.items()},
            "seconds": round(seconds, 1),
        }


def sweep(zoo_dir: str | Path, methods: Iterable[str] | None = None, progress: bool = True) -> list[dict]:
    """Run the grid on the zoo's validation split; returns one dict per evaluated point."""
    from concrete_subspace.evaluation import evaluate
    from concrete_subspace.registry import run_method
    from concrete_subspace.zoo import load_zoo_problem

    problem = load_zoo_problem(zoo_dir, split="validation")
    rows = []
    for name in methods or GRID:
        for params in GRID[name]:
            t0 = time.perf_counter()
            result = run_method(
                name,
                problem,
                **params,
                **({"progress": progress} if name not in ("task_arithmetic", "ties_merging") else {}),
            )
            seconds = time.perf_counter() - t0
            new = list(_rows(name, params, result, seconds, lambda state: evaluate(problem, state)))
            rows.extend(new)
            if progress:
                for r in new:
                    print(
                        f"{name:32s} {str({k: v for k, v in params.items() if k != 'eval_every'}):60s} "
                        f"{r['stage']:>8s} step {r['at_step']:>4} val avg {r['val_avg']:6.2f}  ({seconds:.0f}s)",
                        flush=True,
                    )
    return rows


def write_csv(rows: list[dict], path: str | Path) -> None:
    """Write rows (union of keys as columns) to CSV atomically."""
    from concrete_subspace.checkpoint import atomic_path

    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo_dir")
    parser.add_argument("--out", default="lab-notes/zoo_sweep.csv")
    parser.add_argument("--methods", nargs="*", default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = sweep(args.zoo_dir, args.methods)
    write_csv(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
