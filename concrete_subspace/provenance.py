"""What produced a result: package versions, the locked environment, the code, device, threads, Python.

Recorded in every results file. :func:`code_fingerprint` hashes the source of the package code a computation can
reach, so a cached result is reused only while that code is unchanged; :func:`lock_info` says whether the installed
environment is the one pinned in ``requirements-lock.txt``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import json
import os
import platform
import re
import sys
import time
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

PACKAGE = "concrete_subspace"
PACKAGES = (
    "concrete_subspace",
    "torch",
    "torchvision",
    "transformers",
    "open_clip_torch",
    "datasets",
    "peft",
    "safetensors",
    "numpy",
    "pandas",
)
# Third-party packages whose version changes the numbers a merge run computes (part of every code fingerprint).
NUMERIC_PACKAGES = ("torch", "transformers", "open_clip_torch", "numpy", "safetensors")
LOCK_FILE = "requirements-lock.txt"
# What ``pip freeze`` leaves out (the installer itself), so the installed set compares with the lock file.
NOT_LOCKED = ("pip", "setuptools", "wheel", "distribute")
_PLAIN = (str, int, float, bool, type(None), bytes)


def package_versions(packages=PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when absent)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info(device: str | torch.device = "cpu") -> dict:
    """The device a run used, with the GPU name when it is one."""
    device = torch.device(device)
    info = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if device.type == "cuda" and torch.cuda.is_available():
        info["gpu_name"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


# Environment variables that select CPU kernel code paths (and so the last bits of every result).
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def kernel_info() -> dict:
    """Which CPU kernels ran: the CPU model, torch's kernel instruction set, and any variable that forces a path."""
    return {
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "kernel_env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ},
    }


def environment_info(device: str | torch.device = "cpu") -> dict:
    """Versions, the lock-file check, device, CPU kernels and platform in one JSON-ready dict."""
    return {
        "versions": package_versions(),
        "environment": lock_info(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **device_info(device),
        **kernel_info(),
    }


# ------------------------------------------------------------------------------------------------ the lock file
def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions() -> dict[str, str]:
    """Every installed distribution but this package and the installer: normalised name -> version (what
    ``pip freeze --exclude-editable`` lists)."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and _normalise(name) not in (_normalise(PACKAGE), *NOT_LOCKED):
            found.setdefault(_normalise(name), dist.version)
    return dict(sorted(found.items()))


def read_lock(path: str | Path) -> dict[str, str]:
    """``name==version`` lines of a lock file (comments and blank lines skipped): normalised name -> version."""
    pins = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "==" not in line:
            raise ValueError(f"{path}:{number}: expected 'name==version', got {line!r}")
        name, version = line.split("==", 1)
        pins[_normalise(name.strip())] = version.strip()
    return pins


def default_lock_path() -> Path:
    """The lock file of the source tree this package was imported from (an editable / source install)."""
    return Path(__file__).resolve().parent.parent / LOCK_FILE


@functools.lru_cache(maxsize=8)
def _lock_info_cached(path: str) -> str:
    return json.dumps(_lock_info(Path(path)))


def lock_info(path: str | Path | None = None) -> dict:
    """The lock file's SHA-256, the hash of the installed set of versions, and every package where they disagree.

    Computed once per process and path (the environment does not change while a process runs).
    """
    return json.loads(_lock_info_cached(str(Path(path) if path is not None else default_lock_path())))


def _lock_info(path: Path) -> dict:
    installed = installed_distributions()
    env_hash = hashlib.sha256("\n".join(f"{k}=={v}" for k, v in installed.items()).encode()).hexdigest()
    info: dict[str, Any] = {"installed_sha256": env_hash, "lock_file": str(path)}
    if not path.exists():
        return {**info, "lock_sha256": None, "matches_lock": None, "note": "no lock file beside the package"}
    pins = read_lock(path)
    differences = {
        name: {"locked": pins.get(name), "installed": installed.get(name)}
        for name in sorted(pins.keys() | installed.keys())
        if pins.get(name) != installed.get(name)
    }
    return {
        **info,
        "lock_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "matches_lock": not differences,
        "differences": differences,
    }


# ------------------------------------------------------------------------------------------------ code fingerprint
def _own(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _code_names(code: types.CodeType) -> set[str]:
    """Every global / attribute name a code object (and the functions, lambdas, comprehensions nested in it) uses."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _plain_repr(value: Any) -> str | None:
    """repr of plain data (numbers, strings, and tuples/lists/dicts/sets of them), None for anything else."""
    if isinstance(value, _PLAIN):
        return repr(value)
    if isinstance(value, (tuple, list, frozenset, set)):
        parts = [_plain_repr(v) for v in (sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value)]
        return None if None in parts else f"{type(value).__name__}({', '.join(parts)})"
    if isinstance(value, dict):
        parts = [(_plain_repr(k), _plain_repr(v)) for k, v in value.items()]
        return None if any(None in p for p in parts) else "{" + ", ".join(f"{k}: {v}" for k, v in parts) + "}"
    return None


@functools.lru_cache(maxsize=4096)
def _source(obj: Any) -> str:
    """The source text of a function or class (cached per object: a redefined function is a new object)."""
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):  # no source file (e.g. created by exec): fall back to the bytecode
        code = getattr(obj, "__code__", None)
        return repr(code.co_code) if code is not None else repr(obj)


def code_sources(roots: Iterable[Any]) -> dict[str, str]:
    """Source of every package function and class reachable from ``roots``: qualified name -> source text.

    Followed: the globals and attributes a function's code names, its closure cells, ``functools.partial``
    arguments, a class's methods and bases, containers of these; an instance of a package class contributes its
    class. Plain-data globals and closure values (numbers, strings, tuples of them) are included by value.
    Third-party code is not followed (its version is part of :func:`code_fingerprint`), nor is code reached
    only through a run-time lookup by string (e.g. ``METHODS[name]``).
    """
    sources: dict[str, str] = {}
    stack = list(roots)
    seen: set[int] = set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _PLAIN):
            continue
        seen.add(id(obj))
        if isinstance(obj, functools.partial):
            stack += [obj.func, *obj.args, *obj.keywords.values()]
        elif isinstance(obj, (staticmethod, classmethod)):
            stack.append(obj.__func__)
        elif isinstance(obj, property):
            stack += [obj.fget, obj.fset, obj.fdel]
        elif inspect.ismethod(obj):
            stack += [obj.__func__, obj.__self__]
        elif inspect.isfunction(obj):
            if not _own(obj) or obj.__code__.co_filename.startswith("<"):
                continue  # third-party code, or generated code (dataclass methods: their class's source covers them)
            name = f"{obj.__module__}.{obj.__qualname__}"
            sources[name] = _source(obj)
            stack += _referenced(obj, sources)
            for i, value in enumerate(_closure_values(obj)):
                text = _plain_repr(value)
                if text is None:
                    stack.append(value)
                else:
                    sources[f"{name}:closure[{i}]"] = text
            stack += [v for v in (obj.__defaults__ or ()) + tuple((obj.__kwdefaults__ or {}).values()) if callable(v)]
        elif inspect.isclass(obj):
            if not _own(obj):
                continue
            sources[f"{obj.__module__}.{obj.__qualname__}"] = _source(obj)
            stack += list(vars(obj).values()) + list(obj.__bases__)
        elif isinstance(obj, (tuple, list, set, frozenset)):
            stack += list(obj)
        elif isinstance(obj, dict):
            stack += list(obj.values())
        elif _own(type(obj)):
            stack.append(type(obj))
    return dict(sorted(sources.items()))


def _closure_values(fn: types.FunctionType) -> list[Any]:
    """The values of a function's closure cells (empty cells skipped)."""
    values = []
    for cell in fn.__closure__ or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # a cell not yet filled
            continue
    return values


def _referenced(fn: types.FunctionType, sources: dict[str, str]) -> list[Any]:
    """The package objects a function's code names: globals, and attributes of the package modules it uses."""
    names = _code_names(fn.__code__)
    found = []
    modules = [
        m
        for n in names
        for m in (fn.__globals__.get(n), sys.modules.get(f"{PACKAGE}.{n}"))
        if isinstance(m, types.ModuleType) and (m.__name__ == PACKAGE or m.__name__.startswith(PACKAGE + "."))
    ]
    for name in names:
        if name in fn.__globals__:
            value = fn.__globals__[name]
            text = None if isinstance(value, types.ModuleType) else _plain_repr(value)
            if name.startswith("__") and name.endswith("__"):
                continue  # __name__, __file__: where the code is, not what it does
            if text is not None:
                sources[f"{fn.__module__}:{name}"] = text
            else:
                found.append(value)
        found += [getattr(m, name) for m in modules if hasattr(m, name)]
    return [v for v in found if not isinstance(v, types.ModuleType)]


def code_fingerprint(roots: Iterable[Any]) -> dict:
    """SHA-256 over the package source reachable from ``roots`` and the versions of the numeric packages.

    Returns ``{"sha256", "objects" (qualified name -> 12-hex hash of its source), "versions"}``: the per-object
    hashes say which function changed when a fingerprint differs.
    """
    sources = code_sources(r for r in roots if r is not None)
    versions = {"concrete_subspace": package_versions((PACKAGE,))[PACKAGE], **package_versions(NUMERIC_PACKAGES)}
    objects = {name: hashlib.sha256(text.encode()).hexdigest()[:12] for name, text in sources.items()}
    blob = json.dumps({"objects": objects, "versions": versions}, sort_keys=True)
    return {"sha256": hashlib.sha256(blob.encode()).hexdigest(), "objects": objects, "versions": versions}


class StageClock:
    """Wall seconds of a build's consecutive named stages (its manifest's ``build_seconds``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        """Close the stage that began at the previous lap (or at construction) under ``name``."""
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 1)
        self._last = now

    def total(self) -> dict[str, float]:
        """The stages so far plus ``total`` (seconds since construction)."""
        self.seconds["total"] = round(time.perf_counter() - self._start, 1)
        return self.seconds
