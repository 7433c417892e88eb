"""Ours and fusion_bench 0.2.33 in ONE window, alternating, one process at a time, so the load is comparable.

For each method: ours in the first config, fusion_bench (its own venv, ``benchmarks/fusion_bench_bench.py``), then
ours in the remaining configs. Every run is a fresh process (separate memory peaks). Writes

- ``<out>.json`` / ``<out>.csv``: every row of the window (``implementation`` is ``concrete_subspace`` or
  ``fusion_bench``), in run order, with the start time, the load average before/after and the memory available
  at its start, the ratios ours / fusion_bench of the same window (``comparison``), and the machine
  (CPU model, bf16-relevant flags, nproc: ``benchmarks.harness.versions``);
- ``<fb-stem>_<method>.json``: fusion_bench's rows per method, in the format ``benchmarks.harness`` joins
  (``load_reference``), so later runs of ours on the same CPU compare with them.

    python benchmarks/bench_window.py --case vit_b32 --steps 2 --warmup 1 --threads 1 \\
        --fb-python /work/venvs/fb/bin/python --out benchmarks/results/bench_vit_b32_window_amx_cpu_1t \\
        --fb-stem benchmarks/results/fusion_bench_vit_b32_amx_cpu_1t
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("concrete_task_arithmetic", "layer_wise_adamerging", "layer_wise_concrete_adamerging")
CONFIGS = ("fp32:per_task", "fp32:batched", "bf16:batched")


def mem_available_bytes() -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run(cmd: list[str], env: dict) -> tuple[int, str]:
    print("+", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        print(done.stdout[-2000:], done.stderr[-4000:], sep="\n", flush=True)
    return done.returncode, done.stdout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="vit_b32", choices=["vit_b32", "vit_tiny"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), help="ours: PRECISION:FORWARD_MODE pairs")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--fb-python", default="/work/venvs/fb/bin/python", help="python of the fusion_bench venv")
    parser.add_argument("--no-fusion-bench", action="store_true")
    parser.add_argument("--out", required=True, help="path stem of the window's JSON/CSV")
    parser.add_argument("--fb-stem", default=None, help="path stem of fusion_bench's per-method JSON (default: none)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import pandas as pd

    from benchmarks.harness import compare, versions

    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    common += ["--batch-size", str(args.batch_size)]
    window_start = datetime.now(UTC).isoformat(timespec="seconds")
    rows, fb_by_method, order = [], {}, []
    with tempfile.TemporaryDirectory(prefix="bench_window_") as tmp:
        for method in args.methods:
            plan = [("ours", args.configs[0])]
            plan += [] if args.no_fusion_bench else [("fusion_bench", "fp32:as_shipped")]
            plan += [("ours", c) for c in args.configs[1:]]
            for impl, config in plan:
                stem = Path(tmp) / f"{impl}_{method}_{config.replace(':', '_')}"
                if impl == "ours":
                    cmd = [sys.executable, "-m", "benchmarks.harness", "--cases", args.case, "--methods", method]
                    cmd += ["--configs", config, *common, "--out", str(stem)]
                else:
                    cmd = [args.fb_python, "benchmarks/fusion_bench_bench.py", "--case", args.case]
                    cmd += ["--methods", method, *common, "--out", str(stem)]
                started = datetime.now(UTC).isoformat(timespec="seconds")
                load_before, mem = os.getloadavg(), mem_available_bytes()
                wall = time.perf_counter()
                code, _ = run(cmd, env)
                wall = time.perf_counter() - wall
                meta = {
                    "run_started_utc": started,
                    "run_wall_seconds": wall,
                    "load_average_before_1_5_15": list(load_before),
                    "load_average_after_1_5_15": list(os.getloadavg()),
                    "mem_available_before_bytes": mem,
                    "command": " ".join(cmd).replace(str(stem), "<tmp>"),
                }
                order.append({"implementation": impl, "method": method, "config": config, **meta, "rc": code})
                try:
                    payload = json.loads(stem.with_suffix(".json").read_text())
                except (OSError, ValueError):
                    rows.append({"implementation": impl, "method": method, "config": config, "error": f"rc {code}"})
                    continue
                got = payload["rows"]
                if impl == "fusion_bench":
                    fb_by_method[method] = payload
                    got = [{"config": config, "cpu_model": payload["versions"].get("cpu_model"), **r} for r in got]
                rows.extend({**r, **meta} for r in got)
                print(json.dumps(got, default=str)[:800], flush=True)
    window_end = datetime.now(UTC).isoformat(timespec="seconds")

    table = pd.DataFrame(rows)
    ok = table.dropna(subset=["stage"]) if "stage" in table else pd.DataFrame()
    ours = ok[ok["implementation"] == "concrete_subspace"] if not ok.empty else ok
    theirs = ok[ok["implementation"] == "fusion_bench"].to_dict(orient="records") if not ok.empty else []
    comparison = compare(ours, theirs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "versions": versions(),
        "threads": args.threads,
        "device": "cpu",
        "window_start_utc": window_start,
        "window_end_utc": window_end,
        "order": order,
        "rows": rows,
        "comparison": comparison.to_dict(orient="records"),
        "command": " ".join(["python", "benchmarks/bench_window.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str))
    table.drop(columns=["step_seconds_all"], errors="ignore").to_csv(out.with_suffix(".csv"), index=False)
    if args.fb_stem:
        for method, fb in fb_by_method.items():
            Path(f"{args.fb_stem}_{method}.json").write_text(json.dumps(fb, indent=1, default=str))
    cols = ["implementation", "method", "config", "stage", "step_cpu_seconds_median", "step_seconds_median"]
    cols += ["peak_bytes", "load_average_start", "load_average"]
    if not ok.empty:
        print(ok.reindex(columns=cols).to_string(index=False))
    if not comparison.empty:
        print(comparison[["method", "config", "stage", "step_cpu_ratio", "peak_memory_ratio"]].to_string(index=False))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
