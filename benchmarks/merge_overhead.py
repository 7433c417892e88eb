"""The part of a merge step each library controls: mask sampling + merge + backward through the merge + optimizer step.

The transformer's forward/backward is the same Hugging Face code in both libraries, so it is replaced here by a fixed
synthetic gradient for the merged parameters (one P-sized buffer, present in both); what remains is exactly the
code that differs. Variants (each in a fresh process, memory high-water mark reset after the setup):

- ``ours``: concrete_subspace as committed (precomputed λΣτ for CTA, fused rescale-merge, in-place noise;
  layer-wise ``combine`` as one product per tensor);
- ``ours_before``: the formulas before this optimisation (out-of-place noise, ``θ0 + δ ⊙ rescale_flat(m)``,
  layer-wise combine through per-task repeated coefficient vectors), same precomputation;
- ``fusion_bench``: fusion_bench 0.2.33's ``MaskModel.sample_mask`` + per-tensor rescale + ``merge_weights`` of
  ``TaskWiseMergedModel`` / ``LayerWiseMergedModel`` built from T fine-tuned copies, as in its loops.

Run with the fusion_bench virtualenv (it imports both libraries):

    nice -n 15 /tmp/fb-venv/bin/python benchmarks/merge_overhead.py --steps 3 --warmup 1
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VARIANTS = ("ours", "ours_before", "fusion_bench")
METHODS = ("concrete_task_arithmetic", "layer_wise_adamerging")


def old_sample(logits, temperature, generator):
    """sample_concrete before the in-place rewrite (same values)."""
    import torch

    eps = torch.finfo(logits.dtype).eps
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).clamp(eps, 1 - eps)
    return torch.sigmoid((torch.log(u) - torch.log1p(-u) + logits) / temperature).clamp(
        torch.finfo(logits.dtype).tiny, 1 - eps
    )


def old_combine(vectors, weights, layout):
    """Layer-wise combine before the rewrite: a P-sized repeated coefficient vector per task."""
    import torch

    lengths = torch.tensor(layout.numels)
    total = None
    for w, vector in zip(weights, vectors):
        term = torch.repeat_interleave(w, lengths) * vector
        total = term if total is None else total + term
    return total


def build(case, num_tasks):
    """The random pre-trained tower (θ0) and a loader of synthetic fine-tuned copies, as in the benchmark."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=case.hidden,
        intermediate_size=case.mlp,
        num_hidden_layers=case.layers,
        num_attention_heads=case.heads,
        image_size=case.image,
        patch_size=case.patch,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed)
        model = CLIPVisionModel(config)
    return model


def run(variant, method, steps, warmup, threads, case_name):
    import torch

    import benchmarks.harness as bench
    from concrete_subspace.masks import rescale_flat, sample_concrete
    from concrete_subspace.merging import apply_mask_flat, combine
    from concrete_subspace.task_vectors import ParamLayout, stack_task_vectors

    torch.set_num_threads(threads)
    case = bench.VIT_CASES[case_name]
    model = build(case, case.num_tasks)
    pretrained = {k: v.detach() for k, v in model.named_parameters()}
    layout = ParamLayout.of(pretrained)
    P, T, K = layout.num_params, case.num_tasks, len(layout.keys)
    model_grad = torch.randn(P, generator=torch.Generator().manual_seed(1)) * 1e-3  # stands in for the transformer
    rss_setup = bench.current_rss()
    bench.reset_peak_rss()
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    if variant == "fusion_bench":
        from fusion_bench.models.masks import MaskModel
        from fusion_bench.models.wrappers.layer_wise_fusion import LayerWiseMergedModel, get_layer_wise_weights
        from fusion_bench.models.wrappers.task_wise_fusion import TaskWiseMergedModel, get_task_wise_weights

        model.requires_grad_(True)
        finetuned = []
        for t in range(T):
            m = copy.deepcopy(model)
            with torch.no_grad():
                deltas = bench.synthetic_finetuned(pretrained, t, case)
                for k, p in m.named_parameters():
                    p.copy_(deltas[k])
            finetuned.append(m)
        if method == "concrete_task_arithmetic":
            mask_model = MaskModel(model, ignore_untrained_params=True, parameter_type="logits")
            mask_model.fill_(0.0)
            module = TaskWiseMergedModel(
                get_task_wise_weights(T, 0.3), model, finetuned, clamp_weights=False, tie_weights=True, strict=False
            )
            module.requires_grad_(False)
            params = list(mask_model.parameters())
        else:
            module = LayerWiseMergedModel(
                get_layer_wise_weights(T, K, 0.3), model, finetuned, clamp_weights=False, tie_weights=True, strict=False
            )
            params = [module.merge_weight]
        del finetuned
        grads = dict(zip(layout.keys, layout.unflatten(model_grad).values()))

        def step():
            if method == "concrete_task_arithmetic":
                mask = mask_model.sample_mask(mask_type="continuous", temperature=0.5)
                for name, m in mask.items():
                    mask[name] = m / torch.mean(m)
                merged = module.merge_weights(task_vector_mask=mask)
            else:
                merged = module.merge_weights()
            keys = [k for k in layout.keys if merged[k].requires_grad]
            torch.autograd.backward([merged[k] for k in keys], [grads[k] for k in keys])
    else:
        before = variant == "ours_before"
        _, vectors = stack_task_vectors(
            pretrained,
            lambda t: bench.synthetic_finetuned(pretrained, int(t[4:]), case),
            [f"task{t}" for t in range(T)],
        )
        theta0 = layout.flatten(pretrained)
        if method == "concrete_task_arithmetic":
            summed = combine(vectors, torch.full((T,), 0.3), layout)
            del vectors
            logits = torch.zeros(P, requires_grad=True)
            params = [logits]

            def step():
                mask = (old_sample if before else sample_concrete)(logits, 0.5, gen)
                flat = (
                    theta0 + summed * rescale_flat(mask, layout)
                    if before
                    else apply_mask_flat(theta0, summed, mask, layout)
                )
                flat.backward(model_grad)
        else:
            weights = torch.full((T, K), 0.3, requires_grad=True)
            params = [weights]

            def step():
                flat = theta0 + (old_combine if before else combine)(vectors, weights, layout)
                flat.backward(model_grad)

    build_seconds = time.perf_counter() - t0
    optimizer = torch.optim.Adam(params, lr=1e-3)
    times, cpu = [], []
    for i in range(warmup + steps):
        w0, c0 = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        step()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
    return {
        "variant": variant,
        "method": method,
        "case": case_name,
        "threads": threads,
        "num_params": P,
        "num_tasks": T,
        "num_tensors": K,
        "steps": steps,
        "step_seconds_median": statistics.median(times),
        "step_seconds_all": times,
        "step_cpu_seconds_median": statistics.median(cpu),
        "build_seconds": build_seconds,
        "peak_bytes": bench.peak_rss(),
        "rss_setup_bytes": rss_setup,
        "peak_over_setup_bytes": bench.peak_rss() - rss_setup,
        "load_average": os.getloadavg()[0],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", default="vit_b32", choices=["vit_b32", "vit_tiny"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "merge_overhead_cpu.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(
            "BENCH_JSON "
            + json.dumps(run(args.variants[0], args.methods[0], args.steps, args.warmup, args.threads, args.case))
        )
        return 0
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for method in args.methods:
        for variant in args.variants:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                "--variants",
                variant,
                "--methods",
                method,
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--threads",
                str(args.threads),
                "--case",
                args.case,
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            found = [line for line in done.stdout.splitlines() if line.startswith("BENCH_JSON ")]
            row = (
                json.loads(found[-1][11:])
                if found
                else {"variant": variant, "method": method, "error": " | ".join(done.stderr.strip().splitlines()[-4:])}
            )
            rows.append(row)
            print(
                f"{method:26} {variant:13} step {row.get('step_seconds_median', float('nan')):7.3f} s  "
                f"cpu {row.get('step_cpu_seconds_median', float('nan')):7.3f} s  peak-over-setup "
                f"{row.get('peak_over_setup_bytes', 0) / 2**30:6.2f} GiB {row.get('error', '')}",
                flush=True,
            )
    import torch

    payload = {
        "torch": torch.__version__,
        "threads": args.threads,
        "case": args.case,
        "rows": rows,
        "command": "benchmarks/merge_overhead.py " + " ".join(argv or sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
