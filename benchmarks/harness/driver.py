"""The benchmark driver: each (case, method, config) in a fresh subprocess, the table, the fusion_bench join, the CLI."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from concrete_subspace.checkpoint import atomic_write_bytes

from .cases import ALL_CASES, CASES, DEFAULT_STEPS
from .measure import BENCH_METHODS, DEFAULT_CONFIGS, measure, parse_config, select_configs, versions

if TYPE_CHECKING:
    import pandas

# The repository root (on the workers' PYTHONPATH, so `-m benchmarks.harness` resolves from any directory).
ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "benchmarks" / "results"


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
        "benchmarks.harness",
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
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
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


def load_reference(results_dir: Path = RESULTS_DIR, pattern: str = "fusion_bench_*.json") -> list[dict]:
    """Rows of the fusion_bench runs saved by benchmarks/fusion_bench_bench.py (empty if none).

    Each row carries the CPU model of its run (``cpu_model``: None for files written before it was recorded) and
    its ``source_file``, so :func:`compare` can keep to rows measured on the same machine."""
    rows = []
    for path in sorted(Path(results_dir).glob(pattern)):
        payload = json.loads(path.read_text())
        machine = (payload.get("versions") or {}).get("cpu_model")
        capability = kernel_path(payload.get("versions") or {})
        rows.extend(
            {"cpu_model": machine, "cpu_capability": capability, **r, "source_file": str(path)}
            for r in payload.get("rows", [])
        )
    return rows


def kernel_path(versions_record: dict) -> str | None:
    """The CPU kernel path torch used (``AVX2``, ``AVX512``, ...; forced by ATEN_CPU_CAPABILITY), None if unrecorded."""
    return (versions_record.get("torch_cpu_supports") or {}).get("cpu_capability")


def compare(ours: pandas.DataFrame, theirs: Sequence[dict]) -> pandas.DataFrame:
    """Our rows beside fusion_bench's for the same case, method, stage, device, threads and batch size: ratios.

    Where our rows name their CPU (``cpu_model``), fusion_bench rows of the same CPU are used (and of the same kernel
    path, ``cpu_capability``, where both record it); rows of an unrecorded CPU (older files) only for keys that no
    same-CPU row covers (``fb_same_machine`` False), and rows of another recorded CPU never."""
    import pandas as pd

    if ours.empty or not theirs:
        return pd.DataFrame()
    keys = ["case", "method", "stage", "device", "threads", "batch_size"]
    them = pd.DataFrame(theirs)
    if not set(keys) <= set(them.columns) or not set(keys) <= set(ours.columns):
        return pd.DataFrame()
    them = them.reindex(columns=list(dict.fromkeys([*them.columns, "cpu_model", "source_file"])))
    machines = set(ours["cpu_model"].dropna()) if "cpu_model" in ours else set()
    if machines:
        same = them[them["cpu_model"].isin(machines)]
        paths = set(ours["cpu_capability"].dropna()) if "cpu_capability" in ours else set()
        if paths and "cpu_capability" in same:  # an AVX2-forced run is not compared with an AVX-512 one
            same = same[same["cpu_capability"].isna() | same["cpu_capability"].isin(paths)]
        covered = set(map(tuple, same[keys].astype(str).to_numpy()))
        unknown = them[them["cpu_model"].isna()]
        unknown = unknown[[tuple(k) not in covered for k in unknown[keys].astype(str).to_numpy()]]
        them = pd.concat([same.assign(fb_same_machine=True), unknown.assign(fb_same_machine=False)])
    else:
        them = them.assign(fb_same_machine=False)
    values = ["step_seconds_median", "step_cpu_seconds_median", "peak_bytes", "steps"]
    them = them.reindex(columns=keys + values + ["source_file", "fb_same_machine"]).rename(
        columns={
            "step_seconds_median": "fb_step_seconds",
            "step_cpu_seconds_median": "fb_step_cpu_seconds",
            "peak_bytes": "fb_peak_bytes",
            "steps": "fb_steps",
            "source_file": "fb_source_file",
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

    from concrete_subspace.registry import get_method

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
            f"{r['peak_bytes'] / 2**30:9.2f} {build if build is not None else float('nan'):8.2f} {int(r['steps']):3d}"
        )
    comparison = table.attrs.get("comparison")
    if comparison is not None and not comparison.empty:
        lines += [
            "",
            "vs fusion_bench 0.2.33 (ours / theirs; < 1 is better)",
            f"{'case':8} {'method':32} {'config':13} {'stage':26} {'fb cpu s':>9} {'fb GiB':>7} "
            f"{'wall ratio':>10} {'cpu ratio':>10} {'peak ratio':>10}",
        ]
        for r in comparison.to_dict(orient="records"):
            lines.append(
                f"{r['case']:8} {r['method']:32} {r['config']:13} {r['stage']:26} {r['fb_step_cpu_seconds']:9.3f} "
                f"{r['fb_peak_bytes'] / 2**30:7.2f} {r['step_time_ratio']:10.2f} "
                f"{r['step_cpu_ratio']:10.2f} {r['peak_memory_ratio']:10.2f}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.harness`` (``make bench``): run the benchmark, print the table, write JSON/CSV."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.harness", description=__doc__.splitlines()[0])
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
