"""Where the time of one Concrete TA step goes, in concrete_subspace and in fusion_bench 0.2.33 (ViT-B/32-sized case).

For one implementation per process (``--impl ours`` with the project's .venv, ``--impl fusion_bench`` with the
fusion_bench venv), this script

1. runs the method for ``warmup + 1`` steps and profiles the last one: step wall/CPU time, the time of each part of
   the step (ours: wrappers around the mask sample, the merge, each task's forward and every ``backward`` call;
   fusion_bench: its own ``profile(...)`` sections, re-timed with wall and CPU clocks), and the top operators of a ``torch.profiler`` trace;
2. then times a plain forward + backward of the same ViT (ordinary ``nn.Parameter`` leaves, no merge, no mask)
   on the same 8 x 16 images with the same entropy loss: ``per_task`` (a backward after each task, as ours does)
   and, with ``--plain-styles``, ``summed`` (the 8 losses summed, one backward, as fusion_bench does). This is the
   compute both libraries must do; ``step - plain`` is what the library adds around it.

    nice -n 15 .venv/bin/python benchmarks/profile_step.py --impl ours --threads 1
    nice -n 15 /tmp/fb-venv/bin/python benchmarks/profile_step.py --impl fusion_bench --threads 1 --plain-styles per_task summed
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
# operators that are the transformer's dense algebra (matrix products, fused attention, the patch convolution)
DENSE_OPS = (
    "aten::addmm",
    "aten::mm",
    "aten::bmm",
    "aten::matmul",
    "aten::linear",
    "aten::_scaled_dot_product",
    "aten::convolution",
    "aten::_convolution",
    "aten::mkldnn_convolution",
    "aten::convolution_backward",
    "aten::baddbmm",
    "aten::_flash_attention",
    "aten::_efficient_attention",
)


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


def top_ops(prof, n: int = 20) -> dict:
    """The ``n`` operators with the most self CPU time, and the share of the dense-algebra operators."""
    rows = []
    total = 0.0
    dense = 0.0
    for e in prof.key_averages():
        self_s = e.self_cpu_time_total / 1e6
        total += self_s
        if e.key.startswith(DENSE_OPS):
            dense += self_s
        rows.append({"op": e.key, "count": e.count, "self_cpu_s": self_s, "cpu_total_s": e.cpu_time_total / 1e6})
    rows.sort(key=lambda r: -r["self_cpu_s"])
    return {"self_cpu_total_s": total, "dense_algebra_self_cpu_s": dense, "top": rows[:n]}


@contextlib.contextmanager
def timed_attr(module, name: str, sections: dict, label: str, active: list):
    """Replace ``module.name`` by a wrapper that adds its (wall, CPU) time to ``sections[label]`` while ``active[0]``."""
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        if not active[0]:
            return real(*args, **kwargs)
        start = clocks()
        out = real(*args, **kwargs)
        wall, cpu = since(start)
        sections[label][0] += wall
        sections[label][1] += cpu
        return out

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, real)


def profile_ours(method: str, warmup: int, case, precision: str = "fp32", forward_mode: str | None = None) -> dict:
    """Our method through the registry; the step ``warmup`` is profiled (sections + torch.profiler)."""
    import torch

    import benchmarks.harness as bench
    from concrete_subspace import concrete, loop
    from concrete_subspace.registry import run_method

    problem = bench.vit_problem(case)
    sections = defaultdict(lambda: [0.0, 0.0])
    active = [False]
    out = {}
    real_optimise = loop.optimise
    real_backward = torch.Tensor.backward

    def backward(self, *args, **kwargs):  # task losses are scalars; the merge backward is the P-sized vector's
        if not active[0]:
            return real_backward(self, *args, **kwargs)
        start = clocks()
        result = real_backward(self, *args, **kwargs)
        wall, cpu = since(start)
        label = "task backward (transformer)" if self.dim() == 0 else "merge backward"
        sections[label][0] += wall
        sections[label][1] += cpu
        return result

    def optimise(stage, steps, step_fn, *args, **kwargs):
        def timed(step):
            if step != warmup:
                return step_fn(step)
            active[0] = True
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                start = clocks()
                values = step_fn(step)
                out["step_wall_s"], out["step_cpu_s"] = since(start)
            active[0] = False
            out["profiler"] = top_ops(prof)
            return values

        return real_optimise(stage, steps, timed, *args, **kwargs)

    with contextlib.ExitStack() as stack:
        stack.enter_context(timed_attr(concrete, "sample_concrete", sections, "sample mask", active))
        stack.enter_context(timed_attr(concrete, "apply_mask_flat", sections, "merge (forward)", active))
        stack.enter_context(timed_attr(loop, "forward", sections, "task forward (transformer)", active))
        loop.optimise = optimise  # every method's loop runs through loop.RunContext.optimise
        torch.Tensor.backward = backward
        try:
            run_method(
                method,
                problem,
                progress=False,
                log_every=10**9,
                eval_every=0,
                checkpoint_dir=None,
                precision=precision,
                **({} if forward_mode is None else {"forward_mode": forward_mode}),
                **(
                    {"steps": warmup + 1}
                    if "concrete_adamerging" not in method
                    else {"meta_steps": warmup + 1, "tta_steps": 0}
                ),
            )
        finally:
            loop.optimise = real_optimise
            torch.Tensor.backward = real_backward
    parts = {k: {"wall_s": w, "cpu_s": c} for k, (w, c) in sections.items()}
    known = sum(v["cpu_s"] for v in parts.values())
    parts["rest (optimizer step, logging)"] = {"wall_s": None, "cpu_s": out["step_cpu_s"] - known}
    out["sections"] = parts
    return out


def profile_fusion_bench(method: str, warmup: int, case) -> dict:
    """fusion_bench's own loop (benchmarks/fusion_bench_bench.py's wiring); the step ``warmup`` is profiled."""
    import torch

    spec = importlib.util.spec_from_file_location("fb_bench", ROOT / "benchmarks" / "fusion_bench_bench.py")
    fb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fb)
    bench = fb.load_bench_module()
    pool = fb.SyntheticPool(bench, case, fb.case_vision_model(case, "cpu"), "cpu")
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    out = {}

    class Stamps(list):
        """End-of-step stamps; the profiler runs from the end of step ``warmup - 1`` to the end of step ``warmup``."""

        def append(self, item):
            super().append(item)
            if len(self) == warmup:
                out["_start"] = item
                prof.start()
            elif len(self) == warmup + 1:
                prof.stop()
                out["step_wall_s"], out["step_cpu_s"] = item[0] - out["_start"][0], item[1] - out["_start"][1]

    stamps = Stamps()
    cfg = fb.config_for(method, warmup + 1, 16)
    algo = fb.make_algorithm(method, cfg, pool, bench, case, "cpu", stamps)
    if method != "concrete_task_arithmetic":
        raise ValueError("profile_step: fusion_bench is profiled for concrete_task_arithmetic only")
    sections = defaultdict(lambda: [0.0, 0.0])

    @contextlib.contextmanager
    def profile(action):  # fusion_bench's own profiling sections, timed in wall and CPU clocks during the step
        start = clocks()
        try:
            yield
        finally:
            if len(stamps) == warmup:
                wall, cpu = since(start)
                sections[action][0] += wall
                sections[action][1] += cpu

    algo.profile = profile
    module, mask_model = algo.setup_models()
    algo.train_mask(module=module, mask_model=mask_model)
    out.pop("_start")
    out["profiler"] = top_ops(prof)
    parts = {k: {"wall_s": w, "cpu_s": c} for k, (w, c) in sections.items()}
    known = sum(v["cpu_s"] for v in parts.values())
    parts["rest (logging)"] = {"wall_s": None, "cpu_s": out["step_cpu_s"] - known}
    out["sections"] = parts
    out["sections_note"] = "fusion_bench's own profile() sections; 'compute grad' is the backward of the summed loss"
    return out


def plain_forward_backward(case, styles, batch_size: int = 16, data_step: int = 1, precision: str = "fp32") -> dict:
    """Wall/CPU seconds of a plain forward+backward of the ViT on the step's 8 x 16 images, per backward style
    (``batched``: the 8 batches concatenated, one forward, one backward); ``precision="bf16"``: the forward under
    bf16 autocast, heads and entropy in fp32 (as the library's loop)."""
    import torch

    import benchmarks.harness as bench

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    encoder = bench.vit_encoder(case)
    heads = bench.synthetic_heads(case)
    images = [bench.synthetic_images(t, data_step, batch_size, case) for t in range(case.num_tasks)]
    params = [p for n, p in encoder.named_parameters() if n.startswith("vision_model.")]
    for p in params:
        p.requires_grad_(True)

    def entropy(logits):
        log_p = torch.log_softmax(logits, dim=-1)
        return -(log_p.exp() * log_p).sum(dim=-1).mean()

    def loss_of(t):
        with autocast():
            features = encoder(images[t])
        return entropy(features.float() @ heads[t].T)

    out = {}
    for style in styles:
        for p in params:
            p.grad = None
        start = clocks()
        if style == "per_task":
            for t in range(case.num_tasks):
                loss_of(t).backward()
        elif style == "summed":
            sum(loss_of(t) for t in range(case.num_tasks)).backward()
        elif style == "batched":
            with autocast():
                features = encoder(torch.cat(images)).float()
            parts = torch.split(features, batch_size)
            sum(entropy(parts[t] @ heads[t].T) for t in range(case.num_tasks)).backward()
        else:
            raise ValueError(f"unknown plain style {style!r}; choose per_task, summed or batched")
        wall, cpu = since(start)
        out[style] = {"wall_s": wall, "cpu_s": cpu}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", required=True, choices=["ours", "fusion_bench"])
    parser.add_argument("--method", default="concrete_task_arithmetic")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--case", default="vit_b32", choices=["vit_b32", "vit_tiny"])
    parser.add_argument(
        "--plain-styles", nargs="*", default=["per_task"], help="per_task, summed and/or batched ('' to skip)"
    )
    parser.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16"], help="ours' run and the plain forward+backward"
    )
    parser.add_argument(
        "--forward-mode", default=None, choices=["per_task", "batched"], help="ours' run only (default: the library's)"
    )
    parser.add_argument("--plain-only", action="store_true", help="only the plain forward+backward (no method run)")
    parser.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/profile_step_<impl>_<case>.json)"
    )
    args = parser.parse_args(argv)
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    import benchmarks.harness as bench

    case = bench.VIT_CASES[args.case]
    load_before = os.getloadavg()[0]
    if args.plain_only:
        result = {}
    elif args.impl == "ours":
        result = profile_ours(args.method, args.warmup, case, args.precision, args.forward_mode)
    else:
        result = profile_fusion_bench(args.method, args.warmup, case)
    styles = [s for s in args.plain_styles if s]
    result["plain_forward_backward"] = plain_forward_backward(case, styles, precision=args.precision)
    result.update(
        {
            "impl": args.impl,
            "method": args.method,
            "case": args.case,
            "threads": args.threads,
            "warmup": args.warmup,
            "precision": args.precision,
            "forward_mode": args.forward_mode if args.impl == "ours" else None,
            "machine": bench.machine_info(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "load_average_start": load_before,
            "load_average_end": os.getloadavg()[0],
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
            "command": " ".join(["python", "benchmarks/profile_step.py", *(argv or sys.argv[1:])]),
        }
    )
    out = Path(args.out or RESULTS / f"profile_step_{args.impl}_{args.case}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    summary = {k: v for k, v in result.items() if k not in ("profiler", "versions")}
    print(json.dumps(summary, indent=1, default=str))
    if "profiler" in result:
        print("top ops:", json.dumps(result["profiler"]["top"][:8], indent=0))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
