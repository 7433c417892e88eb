"""Plain forward + backward of the ViT-B/32-sized tower on 16 images: fp32 vs bf16 autocast, and the matmul kernel alone.

Answers "does bf16 autocast pay on this CPU?" before any merge code is involved: the same random tower as
``benchmarks.harness`` (the ``vit_b32`` case), the entropy of one task's head, ordinary parameter leaves, 1 thread.
Also times one [800, 768] x [768, 3072] linear forward + backward (one MLP layer of the tower for 16 images) in both
precisions, and records torch's CPU capability (AVX2 / AVX512 / AMX decide whether oneDNN has bf16 kernels).

    nice -n 10 .venv/bin/python benchmarks/precision_probe.py --out benchmarks/results/precision_probe_cpu_1t.json
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


def timed(fn, repeats: int) -> list[float]:
    """Process CPU seconds of each of ``repeats`` calls (after one untimed warm-up call)."""
    fn()
    out = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        out.append(time.process_time() - start)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="vit_b32", choices=["vit_b32", "vit_tiny"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch

    from benchmarks.harness import VIT_CASES, synthetic_heads, synthetic_images, versions, vit_encoder
    from concrete_subspace.loop import autocast, entropy_loss

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    case = VIT_CASES[args.case]
    encoder = vit_encoder(case, args.device)
    params = [p for p in encoder.parameters()]
    for p in params:
        p.requires_grad_(True)
    head = synthetic_heads(case, args.device)[0]
    images = synthetic_images(0, 0, 16, case, args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def fwd_bwd(precision: str):
        def run():
            for p in params:
                p.grad = None
            with autocast(device, precision):
                features = encoder(images)
            entropy_loss(features.float() @ head.T).backward()
            sync()

        return run

    x = torch.randn(16 * 50, case.hidden, device=device)
    w = torch.randn(case.mlp, case.hidden, device=device, requires_grad=True)

    def linear(precision: str):
        def run():
            with autocast(device, precision):
                y = torch.nn.functional.linear(x, w)
            y.float().sum().backward()
            sync()

        return run

    rows = {}
    for precision in ("fp32", "bf16"):
        rows[f"linear_fwd_bwd_{precision}"] = timed(linear(precision), args.repeats)
        rows[f"vit_fwd_bwd_16_images_{precision}"] = timed(fwd_bwd(precision), args.repeats)
        print(
            precision, {k: [round(v, 3) for v in vals] for k, vals in rows.items() if k.endswith(precision)}, flush=True
        )
    payload = {
        "case": args.case,
        "threads": args.threads,
        "device": args.device,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_seconds": rows,
        "load_average": os.getloadavg()[0],
        "versions": versions(),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(payload, indent=1, default=str))
    print(json.dumps({k: v for k, v in payload.items() if k != "versions"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
