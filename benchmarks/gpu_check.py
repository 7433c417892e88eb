"""One-call GPU check (issue 30): correctness of one step against shipped CPU values, then step time and peak memory
of Concrete TA, layer-wise AdaMerging and layer-wise Concrete AdaMerging, ours and (when importable) fusion_bench.

1. **Correctness** (``vit_tiny``, seconds): one step of each method's merge path with the logistic noise drawn on the
   CPU (CUDA's generator draws other numbers): the mask sample, the merge, every task's forward and backward, the
   gradients of the mask logits and of the layer-wise coefficients. The per-task entropies and gradient summaries
   are compared with ``benchmarks/results/gpu_check_cpu_reference.json`` (computed on a CPU with
   ``--write-reference``) within ``--rtol`` (TF32 is switched off for the check).
2. **Timing and memory** (``vit_b32`` unless ``--smoke``): ``benchmarks.harness`` workers, one fresh process per
   method (peak = ``torch.cuda.max_memory_allocated``), then fusion_bench 0.2.33's own loops through
   ``benchmarks/fusion_bench_bench.py`` if ``--fb-python`` (default: this interpreter) imports ``fusion_bench``;
   otherwise ours only, and the output says so. Needs no network.

    python benchmarks/gpu_check.py                          # on the GPU machine, < 10 min
    python benchmarks/gpu_check.py --device cpu --smoke     # the same code path on a CPU, seconds
    python benchmarks/gpu_check.py --device cpu --write-reference   # regenerate the shipped CPU reference
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REFERENCE = ROOT / "benchmarks" / "results" / "gpu_check_cpu_reference.json"
METHODS = ("concrete_task_arithmetic", "layer_wise_adamerging", "layer_wise_concrete_adamerging")
PROBE_INDICES = 64  # gradient entries compared one by one (spread over the whole vector)


def one_step_values(device: str) -> dict:
    """Per method: the entropies and gradient summaries of one step on the vit_tiny case, noise drawn on the CPU."""
    import torch

    from benchmarks.harness.cases import VIT_TINY, vit_problem
    from concrete_subspace.loop import entropy_backward
    from concrete_subspace.masks import logistic_noise, relaxed_bernoulli
    from concrete_subspace.merging import apply_mask_flat, merge_flat
    from concrete_subspace.task_vectors import stack_task_vectors

    problem = vit_problem(VIT_TINY, batch_size=4, device=device)
    layout, vectors = stack_task_vectors(problem.pretrained, problem.load_finetuned, problem.task_names)
    theta0 = layout.flatten(problem.pretrained)
    noise = logistic_noise((layout.num_params,), torch.Generator().manual_seed(0)).to(device)
    picks = torch.linspace(0, layout.num_params - 1, PROBE_INDICES).long().to(device)

    def summary(grad) -> dict:
        grad = grad.detach().double().cpu()
        return {"norm": float(grad.norm()), "sum": float(grad.sum()), "abs_sum": float(grad.abs().sum())}

    out = {}
    for method in METHODS:
        logits = torch.zeros(layout.num_params, device=device, requires_grad=True)
        weights = torch.full((len(vectors), len(layout.keys)), 0.3, device=device, requires_grad=True)
        if method == "concrete_task_arithmetic":
            mask = relaxed_bernoulli(logits, noise.clone(), 0.5)
            merged = apply_mask_flat(theta0, 0.3 * vectors.sum(0), mask, layout)
        elif method == "layer_wise_adamerging":
            merged = merge_flat(theta0, vectors, weights.clamp(0, 1), layout)
        else:
            mask = relaxed_bernoulli(logits, noise.clone(), 0.5)
            merged = merge_flat(theta0, vectors, weights.clamp(0, 1), layout, mask)
        losses = entropy_backward(problem, merged, layout, 0, forward_mode="per_task")
        row = {"entropies": {t: float(v) for t, v in losses.items()}}
        if logits.grad is not None:
            row["logits_grad"] = summary(logits.grad)
            row["logits_grad_at"] = logits.grad[picks].double().cpu().tolist()
        if weights.grad is not None:
            row["weights_grad"] = weights.grad.double().cpu().flatten().tolist()
        out[method] = row
    return out


def close(a, b, rtol: float, atol: float, where: str, failures: list[str]) -> None:
    """Recursively compare nested dict/list/float values; append a line per value out of tolerance."""
    if isinstance(a, dict):
        for k in b:
            if k not in a:
                failures.append(f"{where}.{k}: missing")
            else:
                close(a[k], b[k], rtol, atol, f"{where}.{k}", failures)
    elif isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, rtol, atol, f"{where}[{i}]", failures)
    elif abs(a - b) > atol + rtol * abs(b):
        failures.append(f"{where}: {a!r} vs CPU {b!r}")


def correctness(device: str, rtol: float, atol: float) -> dict:
    """One step of each method on ``device`` against the shipped CPU reference."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    reference = json.loads(REFERENCE.read_text())
    start = time.perf_counter()
    got = one_step_values(device)
    failures: list[str] = []
    close(got, reference["values"], rtol, atol, "step", failures)
    return {
        "ok": not failures,
        "rtol": rtol,
        "atol": atol,
        "failures": failures[:40],
        "num_failures": len(failures),
        "seconds": time.perf_counter() - start,
        "reference_machine": reference.get("machine"),
    }


def fusion_bench_python(candidate: str | None) -> tuple[str | None, str]:
    """The interpreter that imports fusion_bench (``candidate``, else this one), or None and why not."""
    for python in [candidate] if candidate else [sys.executable]:
        try:
            done = subprocess.run(
                [python, "-c", "import fusion_bench, transformers; print(transformers.__version__)"],
                capture_output=True,
                text=True,
                timeout=300,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{python}: {exc}"
        if done.returncode == 0:
            return python, f"{python} (transformers {done.stdout.strip()})"
        return None, f"{python} cannot import fusion_bench: {done.stderr.strip().splitlines()[-1:]}"
    return None, "no interpreter given"


def timing(
    device: str,
    case: str,
    steps: int,
    warmup: int,
    fb_python: str | None,
    timeout: float,
    configs: list[str],
    threads: int = 4,
) -> dict:
    """Ours (one harness worker per method) and fusion_bench (its own loops), one fresh process per method."""
    import pandas as pd

    from benchmarks.harness import compare
    from benchmarks.harness.driver import _worker

    rows: list[dict] = []
    for method in METHODS:
        for config in configs:
            got = _worker(case, method, device, steps, warmup, threads, "float32", 16, timeout, config)
            rows += [{"implementation": "concrete_subspace", **r} for r in got]
    theirs: list[dict] = []
    if fb_python:
        for method in METHODS:
            stem = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpu_check_fb_{method}"
            cmd = [fb_python, str(ROOT / "benchmarks" / "fusion_bench_bench.py"), "--case", case, "--methods", method]
            cmd += [
                "--steps",
                str(steps),
                "--warmup",
                str(warmup),
                "--threads",
                "1",
                "--device",
                device,
                "--out",
                str(stem),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
            try:
                got = json.loads(stem.with_suffix(".json").read_text())["rows"]
            except (OSError, ValueError):
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                got = [{"case": case, "method": method, "error": f"fusion_bench exited {done.returncode}: {tail}"}]
            theirs += [{"implementation": "fusion_bench", **r} for r in got]
    ours = pd.DataFrame([r for r in rows if "stage" in r])
    ok_theirs = [r for r in theirs if "stage" in r]
    comparison = compare(ours, ok_theirs) if not ours.empty and ok_theirs else pd.DataFrame()
    return {"rows": rows + theirs, "comparison": comparison.to_dict(orient="records")}


def print_report(report: dict) -> None:
    check = report["correctness"]
    print(f"correctness vs CPU reference (rtol {check['rtol']}): {'OK' if check['ok'] else 'FAILED'}")
    for line in check["failures"]:
        print("  ", line)
    print(f"fusion_bench: {report['fusion_bench']}")
    print(f"{'implementation':18} {'method':32} {'config':14} {'stage':26} {'step s':>8} {'peak GiB':>9}")
    for r in report["timing"]["rows"]:
        if "stage" not in r:
            print(
                f"{r.get('implementation', ''):18} {r.get('method', ''):32} ERROR {r.get('error') or r.get('skipped')}"
            )
            continue
        print(
            f"{r['implementation']:18} {r['method']:32} {str(r.get('config', 'as shipped')):14} {r['stage']:26} "
            f"{r['step_seconds_median']:8.3f} "
            f"{r['peak_bytes'] / 2**30:9.3f}"
        )
    for r in report["timing"]["comparison"]:
        print(
            f"ours / fusion_bench  {r['method']:32} {r['config']:14} {r['stage']:26} time {r['step_time_ratio']:.2f}  "
            f"peak {r['peak_memory_ratio']:.2f}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="vit_tiny timing instead of vit_b32 (seconds)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=["fp32:per_task"], help="ours: PRECISION:FORWARD_MODE")
    parser.add_argument("--threads", type=int, default=4, help="CPU threads per worker (the task-vector build)")
    parser.add_argument("--rtol", type=float, default=2e-3)
    parser.add_argument("--atol", type=float, default=1e-9)
    parser.add_argument("--fb-python", default=None, help="python that imports fusion_bench (default: this one)")
    parser.add_argument("--no-fusion-bench", action="store_true")
    parser.add_argument("--timeout", type=float, default=240, help="seconds per worker process")
    parser.add_argument("--out", default=None, help="JSON report (default benchmarks/results/gpu_check_<device>.json)")
    parser.add_argument("--write-reference", action="store_true", help="compute the CPU reference and exit")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from benchmarks.harness import versions

    if args.write_reference:
        if args.device != "cpu":
            parser.error("--write-reference computes the CPU reference: use --device cpu")
        torch.set_num_threads(1)
        payload = {"machine": versions(), "values": one_step_values("cpu")}
        REFERENCE.write_text(json.dumps(payload, indent=1, default=str))
        print(f"wrote {REFERENCE}")
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device} but torch {torch.__version__} sees no CUDA device", file=sys.stderr)
        return 2
    start = time.perf_counter()
    check = correctness(args.device, args.rtol, args.atol)
    print(f"correctness: {'OK' if check['ok'] else 'FAILED'} ({check['seconds']:.1f} s)", flush=True)
    fb_python, fb_note = (
        (None, "skipped (--no-fusion-bench)") if args.no_fusion_bench else fusion_bench_python(args.fb_python)
    )
    if fb_python is None:
        fb_note = f"not run: {fb_note}; ours only"
    case = "vit_tiny" if args.smoke else "vit_b32"
    report = {
        "versions": versions(),
        "device_name": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else args.device,
        "case": case,
        "steps": args.steps,
        "warmup": args.warmup,
        "correctness": check,
        "fusion_bench": fb_note,
        "timing": timing(
            args.device, case, args.steps, args.warmup, fb_python, args.timeout, args.configs, args.threads
        ),
    }
    report["seconds"] = time.perf_counter() - start
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"gpu_check_{args.device.replace(':', '')}.json")
    out.write_text(json.dumps(report, indent=1, default=str))
    print_report(report)
    print(f"total {report['seconds']:.0f} s; wrote {out}")
    return 0 if check["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
