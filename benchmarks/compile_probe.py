"""Does ``torch.compile`` of the merged forward help? One batched entropy forward + backward, eager vs compiled.

The model is a randomly initialised CLIP vision tower of the mini zoo's shape (``--case mini``: hidden 96, 4 layers,
28x28 images, patch 7) or the bench's ViT cases; parameters are substituted through ``functional_call`` exactly as
in the merge loops, with the 8 x 16 task batches concatenated (``forward_mode="batched"``). Reports the first-call
(compile) time and the steady-state CPU seconds per forward + backward, 1 thread, inductor's compile workers at 1.

    TORCHINDUCTOR_COMPILE_THREADS=1 nice -n 10 .venv/bin/python benchmarks/compile_probe.py --case mini \
        --out benchmarks/results/compile_probe_mini_cpu_1t.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="mini", choices=["mini", "vit_tiny", "vit_b32"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch
    from torch.func import functional_call

    from benchmarks.harness import VIT_CASES, ViTCase, synthetic_heads, synthetic_images, versions, vit_encoder
    from concrete_subspace.loop import autocast, entropy_loss
    from concrete_subspace.models.clip_hf import pretrained_state

    torch.set_num_threads(args.threads)
    mini = ViTCase(hidden=96, layers=4, heads=4, mlp=384, patch=7, image=28, projection=64)
    case = mini if args.case == "mini" else VIT_CASES[args.case]
    encoder = vit_encoder(case)
    heads = synthetic_heads(case)
    images = torch.cat([synthetic_images(t, 0, 16, case) for t in range(case.num_tasks)])
    device = torch.device("cpu")
    base = pretrained_state(encoder)

    def merged_forward(params, x):
        return functional_call(encoder, params, (x,), strict=False)

    def step(fn) -> float:
        params = {k: v.clone().requires_grad_(True) for k, v in base.items()}
        start = time.process_time()
        with autocast(device, args.precision):
            features = fn(params, images)
        loss = sum(entropy_loss(part.float() @ head.T) for part, head in zip(features.split(16), heads))
        loss.backward()
        return time.process_time() - start

    results = {}
    compiled = torch.compile(merged_forward, dynamic=False)
    for name, fn in (("eager", merged_forward), ("compiled", compiled)):
        t0 = time.perf_counter()
        first = step(fn)
        first_wall = time.perf_counter() - t0
        times = [step(fn) for _ in range(args.steps)]
        results[name] = {
            "first_call_cpu_s": first,
            "first_call_wall_s": first_wall,
            "step_cpu_s": times,
            "step_cpu_s_median": sorted(times)[len(times) // 2],
        }
        print(
            name,
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in results[name].items() if k != "step_cpu_s"},
            flush=True,
        )
    results["speedup_eager_over_compiled"] = (
        results["eager"]["step_cpu_s_median"] / results["compiled"]["step_cpu_s_median"]
    )
    payload = {
        "case": args.case,
        "threads": args.threads,
        "precision": args.precision,
        "batch": 16 * case.num_tasks,
        "results": results,
        "load_average": os.getloadavg()[0],
        "versions": versions(),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(payload, indent=1, default=str))
    print(json.dumps({k: v for k, v in payload.items() if k != "versions"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
