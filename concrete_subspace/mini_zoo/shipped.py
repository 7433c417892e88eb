"""The mini zoo shipped with the package: its weights and manifest, checked by sha256, never retrained by default.

Pre-training a model from scratch is not reproducible across CPUs (another kernel path gives weights about 11 %
apart, and every table downstream inherits that); loading weights is. So the repository carries the built seed-0
zoo (``concrete_subspace/shipped_zoos/mini/``: the pre-trained CLIP and the eight experts as fp32 safetensors, and
the build's manifest with every file's sha256, every task's data hash and the recipe's fingerprint). A zoo in the
cache is *materialised* from it: the data are regenerated (numpy, deterministic from the seed) and must hash to the
manifest's values, the weights are copied after their hashes are checked. ``make zoo`` rebuilds from scratch
and :func:`compare_to_shipped` says how far the rebuild is from the shipped zoo. Replacing the shipped zoo (a new
format version) is ``make zoo-ship``: rebuild, check, copy here with :func:`ship_zoo`, stage with git.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import platform
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .config import MANIFEST, SPLITS, ZOO_FORMAT_VERSION, MiniConfig

log = logging.getLogger(__name__)

SHIPPED_ZOO_DIR = Path(__file__).resolve().parents[1] / "shipped_zoos" / "mini"
WEIGHT_DIRS = ("pretrained", "finetuned")  # what is shipped; datasets/ is regenerated


class ZooIntegrityError(ValueError):
    """A zoo file or a task's regenerated data do not match the sha256 recorded in the manifest."""


class StaleShippedZooError(RuntimeError):
    """The shipped zoo was built by another recipe (format version) than this package's."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def zoo_file_hashes(zoo_dir: Path) -> dict[str, str]:
    """{relative path: sha256} of every weight and config file of a zoo (``pretrained/``, ``finetuned/``)."""
    zoo_dir = Path(zoo_dir)
    files = sorted(p for d in WEIGHT_DIRS for p in (zoo_dir / d).rglob("*") if p.is_file())
    return {p.relative_to(zoo_dir).as_posix(): sha256_file(p) for p in files}


def task_data_hashes(data: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]) -> dict[str, str]:
    """{task: sha256 over its splits' uint8 images and int64 labels (shape and bytes)}: the data's identity."""
    out = {}
    for task, splits in data.items():
        digest = hashlib.sha256()
        for split in SPLITS:
            images, labels = splits[split]
            for array in (np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)):
                array = np.ascontiguousarray(array)
                digest.update(f"{split}:{array.dtype.str}:{array.shape};".encode())
                digest.update(array.tobytes())
        out[task] = digest.hexdigest()
    return out


def recipe_fingerprint(cfg: MiniConfig) -> str:
    """sha256 of what decides a zoo: the format version, the config and the source of the data, model and training
    code. A change here without a new format version is reported (the shipped weights then predate the code)."""
    from ..data import corruptions, mini, shifts
    from ..data.mini_tasks import drawing, pretraining, procedural, real, splits, tasks
    from . import determinism, model, train

    digest = hashlib.sha256(f"format {ZOO_FORMAT_VERSION};".encode())
    digest.update(json.dumps(asdict(cfg), sort_keys=True, default=str).encode())
    for module in (mini, shifts, corruptions, drawing, pretraining, procedural, real, splits, tasks):
        digest.update(inspect.getsource(module).encode())
    for module in (determinism, model, train):
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()


def kernel_path() -> dict[str, str]:
    """The CPU and the torch kernel path (AVX2 / AVX512 / ...) a zoo was built or materialised on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def check_files(root: Path, expected: Mapping[str, str], rebuild: str = "`make zoo`") -> None:
    """Raise ZooIntegrityError naming the first file under ``root`` that is missing or whose sha256 differs;
    ``rebuild`` is the command the message suggests (each zoo has its own)."""
    for rel, want in expected.items():
        path = Path(root) / rel
        if not path.is_file():
            raise ZooIntegrityError(f"zoo file {path} is missing (the manifest lists it)")
        got = sha256_file(path)
        if got != want:
            raise ZooIntegrityError(
                f"zoo file {path} has sha256 {got[:12]}…, the manifest says {want[:12]}… (corrupted or edited); "
                f"restore it (git checkout / delete the cached zoo) or rebuild with {rebuild}"
            )


def read_shipped(shipped_dir: Path, format_version: int, remedy: str, any_format: bool = False) -> dict | None:
    """A shipped zoo's manifest, None if the package ships none; StaleShippedZooError (whose message ends with
    ``remedy``) if it is of another format than ``format_version`` (unless ``any_format``)."""
    path = Path(shipped_dir) / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    if not any_format and manifest.get("format_version") != format_version:
        raise StaleShippedZooError(
            f"the shipped zoo {path} is format {manifest.get('format_version')}, this package's recipe is "
            f"format {format_version}: {remedy}"
        )
    return manifest


def read_shipped_manifest(shipped_dir: Path | None = None, *, any_format: bool = False) -> dict | None:
    """The shipped mini zoo's manifest (:func:`read_shipped`)."""
    remedy = (
        "rebuild and ship it with `make zoo-ship` (or pass from_scratch=True / "
        "`concrete-subspace zoo build --from-scratch` to build one for yourself)"
    )
    return read_shipped(shipped_dir or SHIPPED_ZOO_DIR, ZOO_FORMAT_VERSION, remedy, any_format)


def ships(seed: int, smoke: bool, precision: str, *, any_format: bool = False) -> bool:
    """Whether the shipped zoo is the one asked for (the shipped one is seed 0, full size, fp32)."""
    manifest = read_shipped_manifest(any_format=any_format)
    return (
        manifest is not None
        and manifest["seed"] == seed
        and manifest["smoke"] == smoke
        and manifest["config"].get("precision", "fp32") == precision
    )


def materialise(zoo_dir: Path, progress: bool = True, shipped_dir: Path | None = None) -> dict:
    """Fill the empty ``zoo_dir`` from the shipped zoo (data regenerated and checked, weights copied and checked);
    returns the manifest to write last. Errors name the file or the task that differs."""
    from .config import mini_config
    from .task_data import generate_task_data, save_task_datasets

    shipped_dir = Path(shipped_dir or SHIPPED_ZOO_DIR)
    shipped = read_shipped_manifest(shipped_dir)
    if shipped is None:
        raise FileNotFoundError(f"no shipped mini zoo at {shipped_dir}")
    check_files(shipped_dir, shipped["files"])
    cfg = mini_config(shipped["smoke"], shipped["config"].get("precision", "fp32"))
    fingerprint = recipe_fingerprint(cfg)
    if fingerprint != shipped.get("recipe_fingerprint"):
        log.warning(
            "the mini zoo recipe's code or config changed since the shipped zoo was built (fingerprint %s… vs %s…); "
            "the shipped weights are used as they are; `make zoo` rebuilds from the current recipe and compares, "
            "`make zoo-ship` replaces the shipped zoo",
            fingerprint[:12],
            str(shipped.get("recipe_fingerprint"))[:12],
        )
    data = generate_task_data(cfg, shipped["seed"], progress)
    hashes = task_data_hashes(data)
    differ = [t for t in shipped["task_names"] if hashes.get(t) != shipped["data_sha256"].get(t)]
    if differ:
        raise ZooIntegrityError(
            f"the regenerated data of task(s) {differ} differ from the shipped zoo's (sha256 of images and labels); "
            f"the data generation code or its libraries changed: rebuild with `make zoo`"
        )
    save_task_datasets(data, zoo_dir / "datasets")
    for rel in shipped["files"]:
        (zoo_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped_dir / rel, zoo_dir / rel)
    check_files(zoo_dir, shipped["files"])
    return {**shipped, "origin": {"shipped": True, "materialised_on": kernel_path()}}


def ship_zoo(built_dir: Path, shipped_dir: Path | None = None) -> Path:
    """Copy a complete built zoo's weights and manifest into ``shipped_dir`` (replaced whole, atomically)."""
    from .manifest import read_manifest

    built_dir, shipped_dir = Path(built_dir), Path(shipped_dir or SHIPPED_ZOO_DIR)
    manifest = read_manifest(built_dir)
    if "files" not in manifest or "data_sha256" not in manifest:
        raise ValueError(f"{built_dir} was built before zoos recorded their hashes; rebuild it with `make zoo`")
    check_files(built_dir, manifest["files"])
    return replace_shipped(built_dir, manifest, shipped_dir)


def replace_shipped(built_dir: Path, manifest: Mapping, shipped_dir: Path, drop: tuple[str, ...] = ("origin",)) -> Path:
    """Replace ``shipped_dir`` whole and atomically by the manifest's ``files`` (copied from ``built_dir``) and the
    manifest less the keys in ``drop`` (what describes only the built copy); any zoo's ship step ends here."""
    built_dir, shipped_dir = Path(built_dir), Path(shipped_dir)
    shipped_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{shipped_dir.name}-", dir=shipped_dir.parent))
    for rel in manifest["files"]:
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built_dir / rel, staging / rel)
    shipped_manifest = {k: v for k, v in manifest.items() if k not in drop}
    (staging / MANIFEST).write_text(json.dumps(shipped_manifest, indent=2, allow_nan=True) + "\n")
    old = shipped_dir.with_name(f".{shipped_dir.name}-old")
    if shipped_dir.exists():
        shipped_dir.rename(old)
    staging.rename(shipped_dir)
    shutil.rmtree(old, ignore_errors=True)
    return shipped_dir


def compare_to_shipped(rebuilt_dir: Path, shipped_dir: Path | None = None) -> dict:
    """How a zoo rebuilt from scratch differs from the shipped one: identical files, or per-task accuracy
    differences (rebuilt − shipped, points) with both kernel paths named."""
    from .manifest import read_manifest

    rebuilt, shipped = read_manifest(rebuilt_dir), read_shipped_manifest(shipped_dir)
    if shipped is None:
        raise FileNotFoundError(f"no shipped mini zoo at {shipped_dir or SHIPPED_ZOO_DIR}")
    return compare_manifests(rebuilt, shipped)


def compare_manifests(rebuilt: Mapping, shipped: Mapping) -> dict:
    """The comparison of :func:`compare_to_shipped` from the two manifests (any zoo whose manifest has ``files``,
    ``data_sha256``, ``kernel`` and zero-shot / individual / task-arithmetic accuracies per split)."""
    same_files = [rel for rel, h in shipped["files"].items() if rebuilt.get("files", {}).get(rel) == h]
    report = {
        "bit_identical": len(same_files) == len(shipped["files"])
        and rebuilt["files"].keys() == shipped["files"].keys(),
        "identical_files": len(same_files),
        "files": len(shipped["files"]),
        "data_identical": rebuilt.get("data_sha256") == shipped.get("data_sha256"),
        "kernel": {"rebuilt": rebuilt.get("kernel"), "shipped": shipped.get("kernel")},
        "accuracy_difference": {},
    }
    for split in ("validation", "test"):
        for kind in ("zero_shot", "individual", "task_arithmetic"):
            new, old = rebuilt["accuracy"][split][kind], shipped["accuracy"][split][kind]
            report["accuracy_difference"][f"{split}/{kind}"] = {t: round(new[t] - old[t], 2) for t in old if t in new}
    return report


def format_comparison(report: dict) -> str:
    """The comparison as a few readable lines."""
    kernel = report["kernel"]
    head = f"rebuilt on {kernel['rebuilt']} vs shipped from {kernel['shipped']}: " + (
        "bit-identical (every weight file has the shipped sha256)"
        if report["bit_identical"]
        else f"{report['identical_files']} of {report['files']} files identical; data "
        f"{'identical' if report['data_identical'] else 'DIFFER'}"
    )
    if report["bit_identical"]:
        return head
    lines = [head, "accuracy, rebuilt minus shipped (points):"]
    for key, diffs in report["accuracy_difference"].items():
        lines.append(f"  {key:28s} " + "  ".join(f"{t} {d:+.1f}" for t, d in diffs.items()))
    return "\n".join(lines)
