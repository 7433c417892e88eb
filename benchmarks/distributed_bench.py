"""Step time and peak memory per rank of a test-time method under torchrun (CPU/gloo or CUDA/NCCL).

    torchrun --nproc-per-node 2 benchmarks/distributed_bench.py --case vit_b32 --method concrete_task_arithmetic \
        --steps 2 --warmup 1 [--shard-vectors] --out benchmarks/results/distributed/vit_b32_cta_2p.json

Every rank runs ``benchmarks.harness.measure`` (the same clocks and peak-memory marks as ``make bench``) on its
share of the tasks; rank 0 writes all ranks' rows and a summary (the step time of the slowest rank, the largest
peak). ``--summarise DIR`` prints the scaling table of every JSON file in DIR (1 process = the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.harness
GIB = 2**30


def run(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from benchmarks.harness import measure, versions
    from concrete_subspace import distributed
    from concrete_subspace.checkpoint import atomic_write_json

    device = distributed.init_from_env(args.device)
    rows = measure(
        args.case,
        args.method,
        device=device,
        steps=args.steps,
        warmup=args.warmup,
        threads=args.threads,
        config=f"{args.precision}:{args.forward_mode}",
        overrides={"shard_vectors": args.shard_vectors},
    )
    everyone = [None] * distributed.world_size()
    if distributed.is_distributed():
        dist.all_gather_object(everyone, rows)
    else:
        everyone = [rows]
    if distributed.is_main():
        summary = []
        for i, stage_row in enumerate(rows):
            stage = [ranks[i] for ranks in everyone]
            summary.append(
                {
                    "stage": stage_row["stage"],
                    "world_size": distributed.world_size(),
                    "shard_vectors": args.shard_vectors,
                    "step_seconds": max(r["step_seconds_median"] for r in stage),
                    "step_cpu_seconds_per_rank": [r["step_cpu_seconds_median"] for r in stage],
                    "peak_gib_per_rank": [r["peak_bytes"] / GIB for r in stage],
                }
            )
        atomic_write_json(
            args.out,
            {
                "case": args.case,
                "method": args.method,
                "args": vars(args),
                "summary": summary,
                "ranks": everyone,
                "versions": versions(),
                "load_average": os.getloadavg()[0],
            },
        )
        print(json.dumps(summary, indent=1))
    if distributed.is_distributed():
        dist.destroy_process_group()


def summarise(directory: Path) -> str:
    """Markdown rows: method, stage, processes, sharded, step s, speed-up, efficiency, peak GiB per rank."""
    results = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    base = {
        (r["case"], r["method"], s["stage"]): s["step_seconds"]
        for r in results
        for s in r["summary"]
        if s["world_size"] == 1 and not s["shard_vectors"]
    }
    lines = [
        "| case | method | stage | processes | shard_vectors | step s (slowest rank) | speed-up | efficiency | peak GiB per rank |",
        "|---|---|---|---:|---|---:|---:|---:|---|",
    ]
    for r in results:
        for s in r["summary"]:
            one = base.get((r["case"], r["method"], s["stage"]))
            speedup = one / s["step_seconds"] if one else float("nan")
            lines.append(
                f"| {r['case']} | {r['method']} | {s['stage']} | {s['world_size']} | {s['shard_vectors']} | "
                f"{s['step_seconds']:.2f} | {speedup:.2f} | {speedup / s['world_size']:.2f} | "
                f"{', '.join(f'{g:.2f}' for g in s['peak_gib_per_rank'])} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="vit_b32")
    parser.add_argument("--method", default="concrete_task_arithmetic")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--forward-mode", default="batched")
    parser.add_argument("--shard-vectors", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--summarise", type=Path, help="print the table of the JSON files in this folder and exit")
    args = parser.parse_args(argv)
    if args.summarise:
        print(summarise(args.summarise))
        return 0
    if not args.out:
        parser.error("--out is required")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
