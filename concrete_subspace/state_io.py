"""Loading and saving state dicts safely: safetensors, Hugging Face directories (also sharded), or weights-only torch files."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from .checkpoint import atomic_write_bytes, load_error_reason


class UnsafeCheckpointError(ValueError, pickle.UnpicklingError):
    """A checkpoint that cannot be loaded as plain tensors (e.g. a pickle that would run code) is refused."""


class CheckpointFileError(ValueError):
    """A weights file that cannot be read: empty, truncated, corrupted, or not in the format its name says."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text and text[0] else type(err).__name__


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with an unreadable file reported as one line naming it and the problem."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise CheckpointFileError(f"{path}: empty file (0 bytes), not a safetensors checkpoint")
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own SafetensorError (an Exception), or OSError
        if type(err).__name__ != "SafetensorError" and not isinstance(err, OSError):
            raise
        raise CheckpointFileError(
            f"{path}: not a readable safetensors file (truncated, corrupted or another format): {_first_line(err)}"
        ) from None


def load_torch_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)``: tensors and plain containers only; anything else is refused, never executed."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path}: refused to load: not a plain tensor checkpoint ({load_error_reason(err)})"
        ) from None
    except (EOFError, RuntimeError, OSError) as err:  # empty or truncated zip archive, unreadable file
        reason = "empty file" if isinstance(err, EOFError) else _first_line(err).split(". ", 1)[0]
        raise CheckpointFileError(
            f"{path}: not a readable torch checkpoint (truncated or corrupted): {reason}"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise UnsafeCheckpointError(f"{path}: expected a state dict (str -> Tensor), got {type(obj).__name__}")
    return obj


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file, a .pt/.bin file (weights only), or a Hugging Face model directory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint file or directory: {path}")
    if path.is_dir():
        single = path / "model.safetensors"
        index = path / "model.safetensors.index.json"
        if single.exists():
            return load_safetensors(single)
        if index.exists():
            state: dict[str, torch.Tensor] = {}
            for shard in shard_names(index):
                if not (path / shard).is_file():
                    raise CheckpointFileError(f"{index}: names the shard {shard!r}, which is missing from {path}")
                state.update(load_safetensors(path / shard))
            return state
        for name in ("pytorch_model.bin", "model.pt"):
            if (path / name).exists():
                return load_torch_weights(path / name)
        raise FileNotFoundError(f"{path}: no model.safetensors, sharded index, or pytorch_model.bin in this directory")
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    return load_torch_weights(path)


def shard_names(index: Path) -> list[str]:
    """The shard files a ``model.safetensors.index.json`` names; an unreadable index is a one-line error."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        return sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointFileError(
            f"{index}: not a valid sharded-checkpoint index ({type(err).__name__}: {_first_line(err)})"
        ) from None


def save_state_dict(
    path: str | os.PathLike, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Atomically write a safetensors file (tensors made contiguous and unshared)."""
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))
