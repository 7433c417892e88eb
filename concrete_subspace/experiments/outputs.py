"""Provenance glue: a notebook's tables as CSV + Markdown beside a results JSON (config, versions, device, runs)."""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..checkpoint import atomic_write_bytes, atomic_write_json
from ..provenance import kernel_info, lock_info
from .cache import RunRecord, jsonable
from .configs import BaseConfig, FlanT5Config, out_dir
from .tables import to_markdown


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that change results."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("concrete_subspace", "torch", "transformers", "numpy", "pandas", "matplotlib", "seaborn"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_info(device: str) -> dict[str, Any]:
    """The device a run used, in words (GPU name when CUDA), the CPU thread count, model and kernel path."""
    info: dict[str, Any] = {
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        **kernel_info(),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def models_info(config: BaseConfig) -> dict[str, Any]:
    """Which models the results came from: the mini zoo's directory and manifest stamp, or the paper scale's arch."""
    if config.scale != "mini":
        return {
            "scale": "paper",
            "arch": getattr(config, "arch", None),
            "model": getattr(config, "model", None),
            "checkpoints": getattr(config, "checkpoints", None),
        }
    if isinstance(config, FlanT5Config):  # notebook 02 at mini scale runs on the mini-text zoo
        from ..text_zoo import default_text_zoo_dir

        directory = default_text_zoo_dir(config.zoo_seed, config.smoke)
    else:
        from ..zoo import default_zoo_dir

        directory = default_zoo_dir(config.zoo_seed, config.smoke)
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        return {"scale": "mini", "zoo_dir": str(directory), "manifest": "missing"}
    manifest = json.loads(manifest_path.read_text())
    return {
        "scale": "mini",
        "zoo_dir": str(directory),
        "zoo_created": manifest.get("created"),
        "zoo_format_version": manifest.get("format_version"),
        "zoo_seed": manifest.get("seed"),
        "zoo_smoke": manifest.get("smoke"),
        "zoo_accuracy_test": manifest.get("accuracy", {}).get("test"),
    }


def check_runs_match_models(runs: Sequence[RunRecord], models: Mapping[str, Any]) -> None:
    """Every run must come from the zoo the results file names (same build stamp): refuse a mixed table."""
    created = models.get("zoo_created")
    for record in runs:
        ran_on = record.context.get("zoo_created")
        if created is not None and ran_on is not None and ran_on != created:
            raise ValueError(
                f"run {record.method} ({record.key}) was computed on the zoo built {ran_on}, but the "
                f"results file names the zoo built {created} ({models.get('zoo_dir')}); rerun it"
            )


def write_outputs(
    config: BaseConfig,
    name: str,
    tables: Mapping[str, pd.DataFrame],
    *,
    started: float,
    runs: Iterable[RunRecord] = (),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save each table as CSV + Markdown and the results JSON (config, zoo and run seeds, versions, device, wall time,
    runs)."""
    directory = out_dir(config, name)
    directory.mkdir(parents=True, exist_ok=True)
    for table_name, frame in tables.items():
        atomic_write_bytes(directory / f"{table_name}.csv", frame.to_csv(index=False, float_format="%.4g").encode())
        atomic_write_bytes(directory / f"{table_name}.md", to_markdown(frame).encode())
    runs = list(runs)
    models = models_info(config)
    check_runs_match_models(runs, models)
    payload = {
        "experiment": name,
        "config": jsonable(dataclasses.asdict(config)),
        "zoo_seed": config.zoo_seed,
        "run_seed": config.run_seed,
        "scale": config.scale,
        "smoke": config.smoke,
        "versions": package_versions(),
        "environment": lock_info(),
        "device": device_info(config.device),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "runs_reused": sum(r.cached for r in runs),
        "runs_computed": sum(not r.cached for r in runs),
        "runs": [
            {
                "method": r.method,
                "key": r.key,
                "tasks": list(r.tasks),
                "params": r.params,
                "seconds": round(r.seconds, 1),
                "cached": r.cached,
                "code": r.code,
                "computed_at": r.computed_at,
                "average": round(r.average, 3),
            }
            for r in runs
        ],
        "tables": {k: f"{k}.csv" for k in tables},
        "models": models,
        **jsonable(dict(extra or {})),
    }
    atomic_write_json(directory / "results.json", payload)
    return directory
