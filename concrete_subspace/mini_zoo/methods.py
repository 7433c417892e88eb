"""The manifest's merge-method results: the core methods at MINI_DEFAULTS on the test split of a built zoo."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .config import MANIFEST, MINI_DEFAULTS, MiniConfig, mini_config
from .determinism import deterministic
from .evaluate import with_average
from .files import atomic_write_json, quiet_library_bars
from .manifest import read_manifest
from .problem import _problem_from


def _methods_fingerprint(cfg: MiniConfig) -> dict:
    """What the merge-method results depend on beyond the zoo itself (JSON-comparable)."""
    return json.loads(json.dumps({"defaults": MINI_DEFAULTS, "overrides": cfg.method_steps}))


def update_method_results(zoo_dir: str | Path, *, progress: bool = True) -> dict:
    """(Re)compute the test-split merge-method results of a complete zoo at MINI_DEFAULTS; rewrites the manifest atomically."""
    zoo_dir = Path(zoo_dir)
    manifest = read_manifest(zoo_dir)
    cfg = mini_config(manifest["smoke"])
    t0 = time.perf_counter()
    with deterministic(), quiet_library_bars():
        manifest["methods"] = _method_results(zoo_dir, manifest, cfg, manifest["seed"], progress)
    manifest["methods_fingerprint"] = _methods_fingerprint(cfg)
    manifest.setdefault("build_seconds", {})["methods"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(zoo_dir / MANIFEST, manifest)
    return manifest


def _method_results(zoo_dir: Path, manifest: dict, cfg: MiniConfig, seed: int, progress: bool) -> dict:
    """Test-split results of the core merge methods at MINI_DEFAULTS (a method that fails is recorded as an error)."""
    from ..evaluation import evaluate
    from ..registry import run_method

    problem = _problem_from(zoo_dir, manifest, tasks=None, split="test", batch_size=16, seed=seed, device="cpu")
    out = {}
    for name in (
        "task_arithmetic",
        "ties_merging",
        "concrete_task_arithmetic",
        "layer_wise_adamerging",
        "layer_wise_concrete_adamerging",
    ):
        params = dict(MINI_DEFAULTS.get(name, {}))
        params.update({k: v for k, v in cfg.method_steps.items() if k in _method_param_names(name)})
        t0 = time.perf_counter()
        if "progress" in _method_param_names(name):
            params["progress"] = progress
        try:
            result = run_method(name, problem, **params)
        except Exception as err:  # record and continue: one broken method must not lose a 15-minute build
            out[name] = {"error": f"{type(err).__name__}: {err}"}
            continue
        scores = evaluate(problem, result.state)
        out[name] = {
            "params": {k: v for k, v in result.params.items() if _json_scalar(v)},
            "test": with_average(scores),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if progress:
            print(f"zoo: {name}: test average {out[name]['test']['average']:.1f}")
    return out


def _json_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _method_param_names(name: str) -> set[str]:
    from ..registry import get_method

    return set(get_method(name).defaults)
