"""Atomic, checksummed files: checkpoints that resume exactly and results that are never half-written.

Every file the library writes goes through :func:`atomic_path` (or its wrappers ``atomic_write_bytes`` /
``atomic_write_json``; the zoo manifests through ``mini_zoo.files.atomic_write_json``, which keeps NaN as written).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

MAGIC = b"CONCRETE-SUBSPACE-CKPT-1\n"


class CheckpointError(RuntimeError):
    """A checkpoint that is corrupted, truncated, of another format, or from a different run configuration."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name beside ``path`` for any writer (safetensors, CSV, bytes): when the block ends, the file is
    fsynced and renamed over ``path``, so readers see the old or the new file, never half; on error it is removed
    and the previous ``path`` (if any) is untouched. The one atomic-write primitive of the library."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return Path(path)


def standard_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±Inf, which JSON cannot hold) replaced by None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: standard_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [standard_json(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented standard JSON (non-JSON values stringified, NaN/Inf written as null)."""
    text = json.dumps(standard_json(obj), indent=2, sort_keys=False, default=str, allow_nan=False)
    return atomic_write_bytes(path, (text + "\n").encode())


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Serialise ``payload`` (tensors, numbers, strings, lists, dicts) with a SHA-256 header, atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    return atomic_write_bytes(path, MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Verify the checksum, then load with ``weights_only=True``; raise :class:`CheckpointError` on any mismatch."""
    raw = Path(path).read_bytes()
    if not raw.startswith(MAGIC):
        raise CheckpointError(f"{path}: not a concrete_subspace checkpoint (bad header); delete it to start over")
    header_end = raw.find(b"\n", len(MAGIC))
    digest, data = raw[len(MAGIC) : max(header_end, len(MAGIC))], raw[header_end + 1 :]
    if header_end < 0 or hashlib.sha256(data).hexdigest().encode() != digest:
        raise CheckpointError(f"{path}: checksum mismatch (corrupted or truncated checkpoint); delete it to start over")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # weights_only refuses globals that could run code: report in one line, never execute
        raise CheckpointError(
            f"{path}: refused to load (not plain tensors and containers): {load_error_reason(err)}"
        ) from None


def load_error_reason(err: BaseException) -> str:
    """The reason inside a ``torch.load(weights_only=True)`` error (e.g. the refused global), without torch's advice."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        line = line.split("WeightsUnpickler error:", 1)[-1].strip()
        if line.startswith(("Unsupported", "Trying to load")):
            return line.split(". ", 1)[0].rstrip(".")
    return (lines or [type(err).__name__])[0][:200]
