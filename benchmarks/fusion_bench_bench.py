"""Time fusion_bench 0.2.33's own training loops on the synthetic ViT-B/32-sized case of benchmarks.harness.

Run with the SEPARATE fusion_bench virtualenv (see benchmarks/README.md), never with the project's .venv:

    /tmp/fb-venv/bin/python benchmarks/fusion_bench_bench.py --methods concrete_task_arithmetic --steps 3 --warmup 1

What runs is fusion_bench's code, unmodified: the algorithm classes ``ConcreteTaskArithmeticAlgorithmForCLIP``,
``CLIPLayerWiseAdaMergingAlgorithm`` and ``ConcreteLayerWiseAdaMergingForCLIP`` with their ``setup_models`` /
``construct_layer_wise_merged_model`` (which turn the fine-tuned models into task vectors) and their loops
``train_mask`` / ``test_time_adaptation`` / ``run_adamerging``. Only what needs the Hub or disk is replaced:
- the model pool is an in-memory object whose ``load_model`` returns the random pre-trained ``CLIPVisionModel`` or a
  fine-tuned copy (θ0 + the same synthetic delta as our bench, made on demand);
- the zero-shot heads, visual projection and logit scale (normally built from the CLIP text tower) are set directly:
  unit-norm random class embeddings x 100, the same construction as our bench;
- ``get_shuffled_test_loader_iter(task)`` yields the same random 224x224 batches as our bench (16 per task).
A step is timed between consecutive ``fabric.log_dict`` calls, which each loop makes once at the end of every step;
the first ``--warmup`` steps are dropped. Peak memory is the process RSS high-water mark (VmHWM), reset after the
pre-trained model is built, exactly as in our bench; on a GPU ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("concrete_task_arithmetic", "layer_wise_adamerging", "layer_wise_concrete_adamerging")


def load_bench_module():
    """Our bench module (its case helpers need only torch and transformers; the package imports in this venv too)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import benchmarks.harness as bench

    return bench


class SyntheticPool:
    """Stands in for fusion_bench's CLIP model pool: same names and ``load_model`` contract, no disk or Hub."""

    def __init__(self, bench, case, pretrained_model, device):
        self.bench, self.case, self.device = bench, case, device
        self.pretrained_model = pretrained_model
        self.model_names = [f"task{t}" for t in range(case.num_tasks)]
        self.loads = 0

    def load_model(self, name):
        if name == "_pretrained_":
            return self.pretrained_model
        index = self.model_names.index(name)
        model = copy.deepcopy(self.pretrained_model)
        state = {k: v for k, v in model.named_parameters()}
        deltas = self.bench.synthetic_finetuned({k: v.detach() for k, v in state.items()}, index, self.case)
        with __import__("torch").no_grad():
            for k, v in state.items():
                v.copy_(deltas[k])
        self.loads += 1
        return model


def make_algorithm(method, config, pool, bench, case, device, stamps):
    """A fusion_bench algorithm object with data and heads wired to the synthetic case; ``stamps`` collects step ends."""
    import lightning as L
    import torch

    if method == "concrete_task_arithmetic":
        from fusion_bench.method.concrete_subspace.clip_concrete_task_arithmetic import (
            ConcreteTaskArithmeticAlgorithmForCLIP as Base,
        )
    elif method == "layer_wise_adamerging":
        from fusion_bench.method.adamerging.clip_layer_wise_adamerging import CLIPLayerWiseAdaMergingAlgorithm as Base
    elif method == "layer_wise_concrete_adamerging":
        from fusion_bench.method.concrete_subspace.clip_concrete_adamerging import (
            ConcreteLayerWiseAdaMergingForCLIP as Base,
        )
    else:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")

    names = pool.model_names
    counters = {t: 0 for t in names}

    class Synthetic(Base):
        def get_shuffled_test_loader_iter(self, task):
            def batches():
                while True:
                    step = counters[task]
                    counters[task] += 1
                    images = bench.synthetic_images(names.index(task), step, config.batch_size, case, device)
                    yield images, torch.zeros(len(images), dtype=torch.long, device=images.device)

            return iterators.setdefault(task, batches())

        def on_test_time_adaptation_start(self):  # heads are set below, not built from a text tower
            pass

    iterators = {}
    algo = Synthetic(config)
    fabric = L.Fabric(accelerator="cuda" if device.startswith("cuda") else "cpu", devices=1)
    fabric.launch()
    real_log = fabric.log_dict

    def log_dict(metrics, step=None):
        real_log(metrics, step=step)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append((time.perf_counter(), time.process_time()))

    fabric.log_dict = log_dict
    algo.fabric = fabric
    algo.modelpool = pool
    heads = bench.synthetic_heads(case, device)  # normalize(w) * logit_scale, as ours
    algo.zeroshot_weights = {t: (h / case.logit_scale).to(device) for t, h in zip(names, heads)}
    algo.logit_scale_exp = torch.tensor(case.logit_scale, device=device)
    projection = torch.nn.Linear(case.hidden, case.projection, bias=False)
    algo.visual_projection = projection.to(device).requires_grad_(False)
    return algo


def config_for(method, steps, batch_size, lr=1e-3):
    """fusion_bench 0.2.33's default method configs (fusion_bench_config/method/...), our step count, no checkpoints."""
    from omegaconf import DictConfig

    common = dict(
        batch_size=batch_size,
        num_workers=0,
        clamp_weights=False,
        tie_weights=True,
        strict=False,
        optimizer="adam",
        lr=lr,
        save_interval=10**9,
        merge_dtype=None,
    )
    if method == "concrete_task_arithmetic":
        return DictConfig(dict(common, scaling_factor=0.3, initial_logits=0, temperature=0.5, max_steps=steps))
    if method == "layer_wise_adamerging":
        return DictConfig(dict(common, init_values=0.3, weights=None, max_steps=steps))
    return DictConfig(
        dict(
            common,
            scaling_factor=0.3,
            initial_logits=0,
            temperature=0.5,
            max_steps=steps,
            base_lr=1.0,
            adamerging_lr=1e-3,
            max_adamerging_steps=steps,
            clamp_weights=False,
        )
    )


def durations(start, stamps):
    """Per-step (wall, process CPU) seconds from the loop start and the end-of-step stamps."""
    edges = [start] + list(stamps)
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(edges, edges[1:])]


def clock():
    return time.perf_counter(), time.process_time()


def case_vision_model(case, device="cpu"):
    """The case's randomly initialised CLIPVisionModel (same seed and config as ours), all parameters trainable:
    fusion_bench merges the parameters that require grad (all of the tower)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=case.hidden,
        intermediate_size=case.mlp,
        num_hidden_layers=case.layers,
        num_attention_heads=case.heads,
        image_size=case.image,
        patch_size=case.patch,
        projection_dim=case.projection,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed)
        pretrained = CLIPVisionModel(config).to(device).eval()
    return pretrained.requires_grad_(True)


def measure(method, steps, warmup, threads, device, batch_size, case_name="vit_b32"):
    """Run one fusion_bench loop in this process; rows per stage like benchmarks.harness.measure."""
    import torch

    torch.set_num_threads(threads)
    load_start = os.getloadavg()[0]
    bench = load_bench_module()
    case = bench.VIT_CASES[case_name]
    rss_start = bench.current_rss()
    t0 = time.perf_counter()
    pretrained = case_vision_model(case, device)
    setup_seconds = time.perf_counter() - t0
    num_params = sum(p.numel() for p in pretrained.parameters())
    pool = SyntheticPool(bench, case, pretrained, device)
    dev = torch.device(device)
    rss_problem = bench.current_rss()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    reset = bench.reset_peak_rss() if dev.type == "cpu" else True

    def peak():
        return int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else bench.peak_rss()

    stages = {}
    total_steps = warmup + steps
    cfg = config_for(method, total_steps, batch_size)
    meta_stamps = []
    algo = make_algorithm(method, cfg, pool, bench, case, device, meta_stamps)
    start = time.perf_counter()
    build_start = time.perf_counter()
    if method == "layer_wise_adamerging":
        module = algo.construct_layer_wise_merged_model(pool)
        build = time.perf_counter() - build_start
        build_peak = peak()
        loop_start = clock()
        algo.test_time_adaptation(module)
        stages["tta"] = durations(loop_start, meta_stamps)
    else:
        module, mask_model = algo.setup_models()
        build = time.perf_counter() - build_start
        build_peak = peak()
        loop_start = clock()
        algo.train_mask(module=module, mask_model=mask_model)
        name = "concrete_task_arithmetic" if method == "concrete_task_arithmetic" else "meta"
        stages[name] = durations(loop_start, meta_stamps)
        if method == "layer_wise_concrete_adamerging":
            with torch.no_grad():  # as in fusion_bench's run(): one continuous sample, rescaled, kept for stage 2
                mask = mask_model.sample_mask(mask_type="continuous", temperature=cfg.temperature)
                mask = {k: m / torch.mean(m) for k, m in mask.items()}
            n_meta = len(meta_stamps)
            loop_start = clock()
            algo.run_adamerging(module, mask)
            stages["tta"] = durations(loop_start, meta_stamps[n_meta:])
    total_seconds = time.perf_counter() - start
    final_peak = peak()
    rows = []
    for stage, times in stages.items():
        timed = [wall for wall, _ in times[warmup:]]
        cpu = [c for _, c in times[warmup:]]
        rows.append(
            {
                "case": case_name,
                "method": method,
                "stage": stage,
                "implementation": "fusion_bench",
                "device": device,
                "threads": threads,
                "batch_size": batch_size,
                "num_tasks": case.num_tasks,
                "num_params": num_params,
                "vector_dtype": "float32",
                "warmup": warmup,
                "steps": len(timed),
                "step_seconds_median": statistics.median(timed) if timed else None,
                "step_seconds_min": min(timed) if timed else None,
                "step_seconds_all": timed,
                "step_cpu_seconds_median": statistics.median(cpu) if cpu else None,
                "step_cpu_seconds_all": cpu,
                "load_average": os.getloadavg()[0],
                "load_average_start": load_start,
                "build_vectors_seconds": build,
                "setup_seconds": setup_seconds,
                "total_seconds": total_seconds,
                "peak_bytes": final_peak,
                "peak_kind": "cuda_max_memory_allocated" if dev.type == "cuda" else ("VmHWM" if reset else "ru_maxrss"),
                "build_peak_bytes": build_peak,
                "rss_start_bytes": rss_start,
                "rss_problem_bytes": rss_problem,
                "note": "fusion_bench 0.2.33 algorithm classes driven on the synthetic ViT-B/32-sized case",
            }
        )
    return rows


def versions():
    from importlib.metadata import version

    import fusion_bench  # noqa: F401
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "fusion_bench": version("fusion-bench"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **load_bench_module().machine_info(),
    }


def _cpu_model() -> str:
    """Our provenance's CPU model (the package imports in this venv once load_bench_module put it on the path)."""
    load_bench_module()
    from concrete_subspace.provenance import cpu_model

    return cpu_model()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--case", default="vit_b32", choices=["vit_b32", "vit_tiny"], help="vit_tiny: smoke test")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=None, help="path stem (default benchmarks/results/fusion_bench_<device>)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        rows = measure(args.methods[0], args.steps, args.warmup, args.threads, args.device, args.batch_size, args.case)
        print("BENCH_JSON " + json.dumps(rows), flush=True)
        return 0
    rows = []
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    for method in args.methods:  # one fresh process per method: separate memory peaks
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "--methods",
            method,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--threads",
            str(args.threads),
            "--device",
            args.device,
            "--batch-size",
            str(args.batch_size),
            "--case",
            args.case,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        found = [line for line in done.stdout.splitlines() if line.startswith("BENCH_JSON ")]
        if found:
            rows.extend(json.loads(found[-1][len("BENCH_JSON ") :]))
        else:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-6:])
            rows.append({"case": args.case, "method": method, "implementation": "fusion_bench", "error": tail})
        print(json.dumps(rows[-1], default=str)[:600], flush=True)
    out = Path(args.out or RESULTS / f"fusion_bench_{args.case}_{args.device.replace(':', '')}")
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "versions": versions(),
        "threads": args.threads,
        "device": args.device,
        "rows": rows,
        "command": " ".join([Path(sys.executable).name, "benchmarks/fusion_bench_bench.py", *(argv or sys.argv[1:])]),
    }
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    os.replace(tmp, out.with_suffix(".json"))
    print(f"wrote {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
