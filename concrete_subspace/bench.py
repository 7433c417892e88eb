"""Benchmarks of the test-time merge loops (issue 5): time per optimisation step, peak memory, task-vector build time.

Every (case, method) pair runs in a fresh subprocess so that memory peaks never mix. Inside it the method runs
through the ordinary registry (``run_method``) with logging, evaluation and checkpointing off; two functions of the
method modules are wrapped to read clocks without changing what is computed: ``optimise`` (each step function is
timed) and ``prepare_vectors`` (task-vector build time). Peak memory is the process RSS high-water mark (Linux
``VmHWM``, reset after the problem is built so the build and the loop have separate peaks; ``ru_maxrss`` otherwise)
on CPU, and ``torch.cuda.max_memory_allocated`` on a GPU.

Cases: ``mini`` (the mini zoo when it is built, else the smoke zoo, else skipped with a message) and ``vit_b32``
(a randomly initialised ViT-B/32-sized ``transformers`` CLIP vision tower, 8 synthetic task vectors made one at a
time, zero-shot-style random heads, random 224x224 images, 16 per task per step). Results of the fusion_bench
comparison (benchmarks/fusion_bench_bench.py, run in its own virtualenv) are joined when present.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import atomic_write_bytes

if TYPE_CHECKING:  # imported lazily at run time, so `concrete-subspace --help` stays fast
    import pandas
    import torch

CASES = ("mini", "vit_b32")
ALL_CASES = CASES + ("vit_tiny",)  # vit_tiny: a seconds-long smoke case, not part of the default run
BENCH_METHODS = ("concrete_task_arithmetic", "layer_wise_adamerging", "layer_wise_concrete_adamerging")
# (warm-up steps, timed steps) per case when not given: a ViT-B/32 step on 2 CPU cores takes tens of seconds.
DEFAULT_STEPS = {"mini": (3, 20), "vit_b32": (1, 3), "vit_tiny": (1, 3)}
# (precision, forward_mode) pairs run side by side by default: the old per-task fp32 loop, batched fp32, batched bf16
DEFAULT_CONFIGS = ("fp32:per_task", "fp32:batched", "bf16:batched")
RESULTS_DIR = Path("benchmarks") / "results"


# ------------------------------------------------------------------------------------------------ the ViT-B/32 case
@dataclass(frozen=True)
class ViTCase:
    """Shape of the synthetic ViT case (defaults: CLIP ViT-B/32's vision tower, ~88M merged parameters)."""

    hidden: int = 768
    layers: int = 12
    heads: int = 12
    mlp: int = 3072
    patch: int = 32
    image: int = 224
    projection: int = 512
    num_tasks: int = 8
    num_classes: int = 10
    delta_scale: float = 1e-3  # task vector entries ~ N(0, delta_scale^2): small, like fine-tuning deltas
    logit_scale: float = 100.0  # CLIP's exp(logit_scale) for the zero-shot-style heads
    seed: int = 0


VIT_B32 = ViTCase()
VIT_TINY = ViTCase(hidden=64, layers=2, heads=2, mlp=128, patch=16, image=64, projection=32, num_tasks=3)  # smoke tests
VIT_CASES = {"vit_b32": VIT_B32, "vit_tiny": VIT_TINY}


def _rng(*parts: Any) -> torch.Generator:
    """A CPU generator seeded from ``parts`` (stable across processes and Python hash seeds)."""
    import torch

    return torch.Generator().manual_seed(zlib.crc32(repr(parts).encode()))


def vit_encoder(case: ViTCase = VIT_B32, device: str = "cpu"):
    """A randomly initialised CLIP vision tower + projection of the given size (an :class:`ImageEncoder`)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from .models.clip_hf import ImageEncoder

    config = CLIPVisionConfig(
        hidden_size=case.hidden,
        intermediate_size=case.mlp,
        num_hidden_layers=case.layers,
        num_attention_heads=case.heads,
        image_size=case.image,
        patch_size=case.patch,
        projection_dim=case.projection,
    )
    with torch.random.fork_rng(devices=[]):  # module constructors draw from the global RNG: fork and seed it
        torch.manual_seed(case.seed)
        vision = CLIPVisionModel(config)
        vision = getattr(vision, "vision_model", vision)  # transformers 4 nests the tower; 5 is flat (same keys)
        projection = torch.nn.Linear(case.hidden, case.projection, bias=False)
    return ImageEncoder(vision, projection).to(device).eval().requires_grad_(False)


def synthetic_finetuned(pretrained: dict, task_index: int, case: ViTCase = VIT_B32) -> dict:
    """θ0 + a small random delta, made on demand for one task (so only one fine-tuned state is ever resident)."""
    import torch

    g = _rng("finetuned", case.seed, task_index)
    out = {}
    for key, value in pretrained.items():
        delta = torch.randn(value.shape, generator=g, dtype=value.dtype) * case.delta_scale
        out[key] = value + delta.to(value.device)
    return out


def synthetic_heads(case: ViTCase = VIT_B32, device: str = "cpu") -> list:
    """Zero-shot-style heads: unit-norm random class embeddings times CLIP's logit scale, one [C, D] per task."""
    import torch

    heads = []
    for t in range(case.num_tasks):
        w = torch.randn(case.num_classes, case.projection, generator=_rng("head", case.seed, t))
        heads.append((torch.nn.functional.normalize(w, dim=-1) * case.logit_scale).to(device))
    return heads


def synthetic_images(task_index: int, step: int, batch_size: int, case: ViTCase = VIT_B32, device: str = "cpu"):
    """A deterministic batch of random normalised images for (task, step)."""
    import torch

    g = _rng("images", case.seed, task_index, step)
    return torch.randn(batch_size, 3, case.image, case.image, generator=g).to(device)


def vit_problem(case: ViTCase = VIT_B32, batch_size: int = 16, device: str = "cpu"):
    """The ViT case as a :class:`MergeProblem` (task vectors stream in one fine-tuned state at a time)."""
    from .models.clip_hf import pretrained_state
    from .problem import MergeProblem

    encoder = vit_encoder(case, device)
    pretrained = pretrained_state(encoder)
    tasks = tuple(f"task{t}" for t in range(case.num_tasks))
    heads = dict(zip(tasks, synthetic_heads(case, device)))
    index = {t: i for i, t in enumerate(tasks)}

    def no_eval(task: str):
        return iter(())

    return MergeProblem(
        model=encoder,
        pretrained=pretrained,
        task_names=tasks,
        load_finetuned=lambda task: synthetic_finetuned(pretrained, index[task], case),
        task_logits=lambda task, features: features @ heads[task].T,
        unlabeled_batch=lambda task, step: synthetic_images(index[task], step, batch_size, case, device),
        eval_batches=no_eval,
        info=asdict(case),
    )


# ------------------------------------------------------------------------------------------------ the mini case
def mini_problem(batch_size: int = 16, device: str = "cpu"):
    """The mini zoo's problem (the full zoo if built, else the smoke zoo), or None with the reason."""
    try:
        from . import zoo
    except ImportError as exc:  # the zoo module is optional for the benchmark
        return None, f"concrete_subspace.zoo is not importable ({exc})"
    for smoke in (False, True):
        directory = zoo.default_zoo_dir(smoke=smoke)
        try:
            zoo.read_manifest(directory)
        except Exception:  # noqa: BLE001 - not built (or half-built): try the next one
            continue
        problem = zoo.load_zoo_problem(directory, batch_size=batch_size, device=device)
        return problem, f"{'smoke ' if smoke else ''}zoo at {directory}"
    return None, (
        f"no mini zoo built (looked in {zoo.default_zoo_dir()} and {zoo.default_zoo_dir(smoke=True)}); "
        "build it with `make zoo` (or `make zoo-smoke`)"
    )


# ------------------------------------------------------------------------------------------------ measurement
def current_rss() -> int:
    """Resident set size of this process now, in bytes (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def peak_rss() -> int:
    """RSS high-water mark in bytes: VmHWM (resettable) on Linux, ru_maxrss elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark to the current RSS (Linux >= 4.0: write 5 to clear_refs); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Probe:
    """Clocks and memory marks of one method run, filled by the wrappers of :func:`instrumented`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.steps: list[tuple[str, int, float, float]] = []  # (stage, step, wall seconds, process CPU seconds)
        self.build_seconds: list[float] = []
        self.build_peak: int | None = None

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def peak(self) -> int:
        import torch

        return int(torch.cuda.max_memory_allocated(self.device)) if self.device.type == "cuda" else peak_rss()


@contextlib.contextmanager
def instrumented(probe: Probe) -> Iterator[None]:
    """Wrap ``optimise`` (time each step) and the task-vector builders (time the build) in the method modules."""
    from . import adamerging, concrete

    real_optimise = adamerging.optimise

    def optimise(stage: str, steps: int, step_fn: Callable[[int], dict], *args, **kwargs):
        def timed(step: int) -> dict:
            probe.sync()
            start, cpu = time.perf_counter(), time.process_time()
            values = step_fn(step)
            probe.sync()
            probe.steps.append((stage, step, time.perf_counter() - start, time.process_time() - cpu))
            return values

        return real_optimise(stage, steps, timed, *args, **kwargs)

    def timed_build(real: Callable) -> Callable:
        def build(*args, **kwargs):
            probe.sync()
            start = time.perf_counter()
            out = real(*args, **kwargs)
            probe.sync()
            probe.build_seconds.append(time.perf_counter() - start)
            probe.build_peak = probe.peak()
            return out

        return build

    patched = [
        (adamerging, "optimise", optimise),
        (concrete, "optimise", optimise),
        (adamerging, "prepare_vectors", timed_build(adamerging.prepare_vectors)),
        (concrete, "prepare_vectors", timed_build(concrete.prepare_vectors)),
        (concrete, "sum_task_vectors", timed_build(concrete.sum_task_vectors)),
    ]  # CTA streams a sum
    saved = []
    for module, name, fn in patched:
        if not hasattr(module, name):
            raise AttributeError(f"bench: {module.__name__}.{name} is gone; update concrete_subspace/bench.py")
        saved.append((module, name, getattr(module, name)))
        setattr(module, name, fn)
    try:
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def parse_config(config: str) -> tuple[str, str]:
    """'bf16:batched' -> ('bf16', 'batched'), checked against the loop's precisions and forward modes."""
    from .loop import check_forward_mode, check_precision

    precision, sep, forward_mode = config.partition(":")
    if not sep:
        raise ValueError(f"bench config {config!r} must be PRECISION:FORWARD_MODE, e.g. 'bf16:batched'")
    check_precision(precision)
    check_forward_mode(forward_mode)
    return precision, forward_mode


def select_configs(configs: Sequence[str], precisions: Sequence[str] | None) -> list[str]:
    """``configs`` restricted to ``precisions`` (all when None); an empty selection is an error."""
    chosen = [c for c in configs if precisions is None or parse_config(c)[0] in precisions]
    if not chosen:
        raise ValueError(f"no bench config of precision {list(precisions or [])} among {list(configs)}")
    return chosen


def method_params(
    method: str, total_steps: int, vector_dtype: str, precision: str = "fp32", forward_mode: str = "batched"
) -> dict:
    """Registry overrides for a timed run: ``total_steps`` per stage, no logging, evaluation or checkpoints."""
    common = {
        "progress": False,
        "log_every": 10**9,
        "eval_every": 0,
        "checkpoint_dir": None,
        "vector_dtype": vector_dtype,
        "precision": precision,
        "forward_mode": forward_mode,
    }
    if "concrete_adamerging" in method:
        return {**common, "meta_steps": total_steps, "tta_steps": total_steps}
    return {**common, "steps": total_steps}


def versions() -> dict:
    """Versions of the software and the hardware that decide the timings."""
    import torch

    from .provenance import environment_info

    return {**environment_info("cuda" if torch.cuda.is_available() else "cpu"), "cpu_count": os.cpu_count()}


def measure(
    case: str,
    method: str,
    *,
    device: str = "cpu",
    steps: int,
    warmup: int,
    threads: int,
    vector_dtype: str = "float32",
    batch_size: int = 16,
    config: str = "fp32:batched",
    overrides: dict | None = None,
) -> list[dict]:
    """Run one method on one case in THIS process and return one row per optimisation stage.

    ``overrides``: further method parameters (e.g. ``shard_vectors`` for benchmarks/distributed_bench.py)."""
    import torch

    precision, forward_mode = parse_config(config)
    torch.set_num_threads(threads)
    dev = torch.device(device)
    rss_start = current_rss()
    t0 = time.perf_counter()
    if case in VIT_CASES:
        spec = VIT_CASES[case]
        problem = vit_problem(spec, batch_size, device)
        note = (
            f"random CLIP vision tower (hidden {spec.hidden}, {spec.layers} layers), {spec.num_tasks} synthetic tasks"
        )
    elif case == "mini":
        problem, note = mini_problem(batch_size, device)
        if problem is None:
            return [{"case": case, "method": method, "config": config, "skipped": note}]
    else:
        raise ValueError(f"unknown bench case {case!r}; choose from {list(ALL_CASES)}")
    setup_seconds = time.perf_counter() - t0
    num_params = sum(v.numel() for v in problem.pretrained.values())
    rss_problem = current_rss()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    reset = reset_peak_rss() if dev.type == "cpu" else True
    probe = Probe(dev)
    from .registry import run_method

    start = time.perf_counter()
    with instrumented(probe):
        run_method(
            method,
            problem,
            **method_params(method, warmup + steps, vector_dtype, precision, forward_mode),
            **(overrides or {}),
        )
    total_seconds = time.perf_counter() - start
    peak = probe.peak()
    rows = []
    for stage in dict.fromkeys(s for s, *_ in probe.steps):
        times = [sec for s, i, sec, _ in probe.steps if s == stage and i >= warmup]
        cpu = [c for s, i, _, c in probe.steps if s == stage and i >= warmup]
        rows.append(
            {
                "case": case,
                "method": method,
                "stage": stage,
                "implementation": "concrete_subspace",
                "device": device,
                "config": config,
                "precision": precision,
                "forward_mode": forward_mode,
                "threads": threads,
                "batch_size": batch_size,
                "num_tasks": len(problem.task_names),
                "num_params": num_params,
                "vector_dtype": vector_dtype,
                "warmup": warmup,
                "steps": len(times),
                "step_seconds_median": statistics.median(times) if times else None,
                "step_seconds_min": min(times) if times else None,
                "step_seconds_all": times,
                "step_cpu_seconds_median": statistics.median(cpu) if cpu else None,
                "step_cpu_seconds_all": cpu,
                "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                "build_vectors_seconds": probe.build_seconds[0] if probe.build_seconds else None,
                "setup_seconds": setup_seconds,
                "total_seconds": total_seconds,
                "peak_bytes": peak,
                "peak_kind": "cuda_max_memory_allocated" if dev.type == "cuda" else ("VmHWM" if reset else "ru_maxrss"),
                "build_peak_bytes": probe.build_peak,
                "rss_start_bytes": rss_start,
                "rss_problem_bytes": rss_problem,
                "note": note,
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------ the driver
def _worker(
    case: str,
    method: str,
    device: str,
    steps: int,
    warmup: int,
    threads: int,
    vector_dtype: str,
    batch_size: int,
    timeout: float | None,
    config: str = "fp32:batched",
) -> list[dict]:
    """Run :func:`measure` in a fresh interpreter (separate memory peak); a failure becomes a row with the error."""
    cmd = [
        sys.executable,
        "-m",
        "concrete_subspace.bench",
        "--worker",
        "--cases",
        case,
        "--methods",
        method,
        "--device",
        device,
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
        "--threads",
        str(threads),
        "--vector-dtype",
        vector_dtype,
        "--batch-size",
        str(batch_size),
        "--configs",
        config,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"case": case, "method": method, "config": config, "error": f"timed out after {timeout} s"}]
    for line in done.stdout.splitlines()[::-1]:
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON ") :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    return [
        {
            "case": case,
            "method": method,
            "config": config,
            "error": f"worker exited {done.returncode}: {' | '.join(tail)}",
        }
    ]


def load_reference(results_dir: Path = RESULTS_DIR) -> list[dict]:
    """Rows of the fusion_bench runs saved by benchmarks/fusion_bench_bench.py (empty if none)."""
    rows = []
    for path in sorted(Path(results_dir).glob("fusion_bench_*.json")):
        payload = json.loads(path.read_text())
        rows.extend({**r, "source_file": str(path)} for r in payload.get("rows", []))
    return rows


def compare(ours: pandas.DataFrame, theirs: Sequence[dict]) -> pandas.DataFrame:
    """Our rows beside fusion_bench's for the same case, method, stage, device, threads and batch size: ratios."""
    import pandas as pd

    if ours.empty or not theirs:
        return pd.DataFrame()
    keys = ["case", "method", "stage", "device", "threads", "batch_size"]
    them = pd.DataFrame(theirs)
    if not set(keys) <= set(them.columns) or not set(keys) <= set(ours.columns):
        return pd.DataFrame()
    values = ["step_seconds_median", "step_cpu_seconds_median", "peak_bytes", "steps"]
    them = them.reindex(columns=keys + values).rename(
        columns={
            "step_seconds_median": "fb_step_seconds",
            "step_cpu_seconds_median": "fb_step_cpu_seconds",
            "peak_bytes": "fb_peak_bytes",
            "steps": "fb_steps",
        }
    )
    merged = ours.reindex(columns=keys + ["config"] + values).merge(them, on=keys, how="inner")
    merged["step_time_ratio"] = merged["step_seconds_median"] / merged["fb_step_seconds"]
    merged["step_cpu_ratio"] = merged["step_cpu_seconds_median"] / merged["fb_step_cpu_seconds"]
    merged["peak_memory_ratio"] = merged["peak_bytes"] / merged["fb_peak_bytes"]
    return merged


def run_bench(
    cases: Sequence[str] = CASES,
    methods: Sequence[str] = BENCH_METHODS,
    device: str = "cpu",
    steps: int | None = None,
    warmup: int | None = None,
    threads: int = 2,
    out: str | Path | None = None,
    vector_dtype: str = "float32",
    batch_size: int = 16,
    timeout: float | None = 3600,
    progress: bool = True,
    configs: Sequence[str] = DEFAULT_CONFIGS,
) -> pandas.DataFrame:
    """Benchmark ``methods`` on ``cases`` (one subprocess each) and return a tidy table; write JSON/CSV to ``out``.

    ``configs`` are ``precision:forward_mode`` pairs, each a separate row (:data:`DEFAULT_CONFIGS`).
    ``steps``/``warmup`` default per case (:data:`DEFAULT_STEPS`). ``out`` is a path stem: ``<out>.json`` holds the
    rows, versions, threads and device, ``<out>.csv`` the table. Saved fusion_bench rows are joined for ratios.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from .registry import get_method

    for case in cases:
        if case not in ALL_CASES:
            raise ValueError(f"unknown bench case {case!r}; choose from {list(ALL_CASES)}")
    for method in methods:
        get_method(method)  # an unknown name fails here, before any subprocess starts
    for config in configs:
        parse_config(config)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but torch.cuda.is_available() is False")
    rows: list[dict] = []
    jobs = [(c, m, k) for c in cases for m in methods for k in configs]
    for case, method, config in tqdm(jobs, desc="bench", disable=not progress):
        w, s = DEFAULT_STEPS[case]
        rows.extend(
            _worker(
                case,
                method,
                device,
                steps if steps is not None else s,
                warmup if warmup is not None else w,
                threads,
                vector_dtype,
                batch_size,
                timeout,
                config,
            )
        )
    table = pd.DataFrame(rows)
    measured = table.dropna(subset=["stage"]) if "stage" in table else pd.DataFrame()
    comparison = compare(measured, load_reference())
    if out is not None:
        out = Path(out)
        payload = {
            "versions": versions(),
            "threads": threads,
            "device": device,
            "rows": rows,
            "comparison": comparison.to_dict(orient="records"),
        }
        atomic_write_bytes(out.with_suffix(".json"), json.dumps(payload, indent=1, default=str).encode())
        atomic_write_bytes(
            out.with_suffix(".csv"),
            table.drop(columns=["step_seconds_all"], errors="ignore").to_csv(index=False).encode(),
        )
    table.attrs["comparison"] = comparison
    return table


def format_table(table: pandas.DataFrame) -> str:
    """A compact text table: step time (median, s), peak memory (GiB), task-vector build time (s)."""
    if table.empty:
        return "(no rows)"
    lines = [
        f"{'case':8} {'method':32} {'config':13} {'stage':26} {'step s':>8} {'cpu s':>8} {'peak GiB':>9} {'build s':>8} {'n':>3}"
    ]
    for r in table.to_dict(orient="records"):
        if isinstance(r.get("skipped"), str) or isinstance(r.get("error"), str):
            lines.append(
                f"{r['case']:8} {r['method']:32} {str(r.get('config', '')):13} {'SKIPPED: ' + r['skipped'] if isinstance(r.get('skipped'), str) else 'ERROR: ' + r['error']}"
            )
            continue
        build = r.get("build_vectors_seconds")
        cpu = r.get("step_cpu_seconds_median")
        lines.append(
            f"{r['case']:8} {r['method']:32} {r['config']:13} {r['stage']:26} {r['step_seconds_median']:8.3f} "
            f"{cpu if cpu is not None else float('nan'):8.3f} "
            f"{r['peak_bytes'] / 2**30:9.2f} {build if build is not None else float('nan'):8.2f} {r['steps']:3d}"
        )
    comparison = table.attrs.get("comparison")
    if comparison is not None and not comparison.empty:
        lines += [
            "",
            "vs fusion_bench 0.2.33 (ours / theirs; < 1 is better)",
            f"{'case':8} {'method':32} {'config':13} {'stage':26} {'wall ratio':>10} {'cpu ratio':>10} {'peak ratio':>10}",
        ]
        for r in comparison.to_dict(orient="records"):
            lines.append(
                f"{r['case']:8} {r['method']:32} {r['config']:13} {r['stage']:26} {r['step_time_ratio']:10.2f} "
                f"{r['step_cpu_ratio']:10.2f} {r['peak_memory_ratio']:10.2f}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``concrete-subspace bench``: run the benchmark, print the table, write JSON/CSV."""
    parser = argparse.ArgumentParser(prog="concrete-subspace bench", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=ALL_CASES)
    parser.add_argument("--methods", nargs="+", default=list(BENCH_METHODS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per stage (default per case)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default per case)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vector-dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(DEFAULT_CONFIGS),
        help="PRECISION:FORWARD_MODE pairs, one row each (default: %(default)s)",
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        default=None,
        choices=["fp32", "bf16"],
        help="keep only the configs of these precisions (make bench PRECISION=...)",
    )
    parser.add_argument(
        "--out", default=None, help="path stem for <out>.json and <out>.csv (default benchmarks/results/bench_<device>)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        case, method = args.cases[0], args.methods[0]
        w, s = DEFAULT_STEPS[case]
        rows = measure(
            case,
            method,
            device=args.device,
            steps=args.steps if args.steps is not None else s,
            warmup=args.warmup if args.warmup is not None else w,
            threads=args.threads,
            vector_dtype=args.vector_dtype,
            batch_size=args.batch_size,
            config=args.configs[0],
        )
        print("BENCH_JSON " + json.dumps(rows, default=str), flush=True)
        return 0
    out = args.out or str(RESULTS_DIR / f"bench_{args.device.replace(':', '')}")
    table = run_bench(
        args.cases,
        args.methods,
        args.device,
        args.steps,
        args.warmup,
        args.threads,
        out,
        args.vector_dtype,
        args.batch_size,
        configs=select_configs(args.configs, args.precision),
    )
    print(format_table(table))
    print(f"\nwrote {Path(out).with_suffix('.json')} and {Path(out).with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
