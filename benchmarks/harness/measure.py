"""Measurement: one (case, method, precision:forward_mode) run through the ordinary registry, with clocks around
each optimisation step and the task-vector build, and the process's peak memory (RSS on CPU, CUDA allocator on GPU)."""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from .cases import ALL_CASES, VIT_CASES, mini_problem, vit_problem

if TYPE_CHECKING:
    import torch

BENCH_METHODS = ("concrete_task_arithmetic", "layer_wise_adamerging", "layer_wise_concrete_adamerging")


# (precision, forward_mode) pairs run side by side by default: the old per-task fp32 loop, batched fp32, batched bf16
DEFAULT_CONFIGS = ("fp32:per_task", "fp32:batched", "bf16:batched")


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
    from concrete_subspace import adamerging, concrete, loop

    real_optimise = loop.optimise

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
        (loop, "optimise", optimise),  # every method's loop runs through loop.RunContext.optimise
        (adamerging, "prepare_vectors", timed_build(adamerging.prepare_vectors)),
        (concrete, "prepare_vectors", timed_build(concrete.prepare_vectors)),
        (concrete, "sum_task_vectors", timed_build(concrete.sum_task_vectors)),
    ]  # CTA streams a sum
    saved = []
    for module, name, fn in patched:
        if not hasattr(module, name):
            raise AttributeError(f"bench: {module.__name__}.{name} is gone; update benchmarks/harness/measure.py")
        saved.append((module, name, getattr(module, name)))
        setattr(module, name, fn)
    try:
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def parse_config(config: str) -> tuple[str, str]:
    """'bf16:batched' -> ('bf16', 'batched'), checked against the loop's precisions and forward modes."""
    from concrete_subspace.loop import check_forward_mode, check_precision

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


# CPU flags that decide whether bf16 autocast has native kernels (AMX tiles, AVX-512 BF16) or is emulated (AVX2 only)
CPU_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")


# environment variables that force a narrower kernel path (e.g. AVX2 on an AVX-512 CPU): recorded with every timing
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS")


def machine_info() -> dict:
    """The machine a timing was taken on: CPU model, the bf16-relevant CPU flags, usable cores, load average."""
    flags: list[str] = []
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                flags = [f for f in CPU_FLAGS_OF_INTEREST if f in present]
                break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        nproc = os.cpu_count()
    torch_sees = {}
    with contextlib.suppress(Exception):  # torch's own detection (private helpers; absent in some versions)
        import torch

        torch_sees = {
            "amx_tile": bool(torch.cpu._is_amx_tile_supported()),
            "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
        }
    with contextlib.suppress(Exception):  # the kernel path torch dispatches to (ATEN_CPU_CAPABILITY can force avx2)
        import torch

        torch_sees["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    forced = {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}
    return {
        "cpu_flags": flags,
        "torch_cpu_supports": torch_sees,
        "kernel_env": forced,
        "nproc": nproc,
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def versions() -> dict:
    """Versions of the software and the hardware that decide the timings."""
    import torch

    from concrete_subspace.provenance import environment_info

    return {
        **environment_info("cuda" if torch.cuda.is_available() else "cpu"),
        "cpu_count": os.cpu_count(),
        **machine_info(),
    }


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

    from concrete_subspace.provenance import cpu_model

    precision, forward_mode = parse_config(config)
    torch.set_num_threads(threads)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
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
    from concrete_subspace.registry import run_method

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
                "load_average_start": load_start,
                "cpu_model": cpu_model(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
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
