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


def load_torch_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)``: tensors and plain containers only; anything else is refused, never executed."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(f"{path}: refused to load: not a plain tensor checkpoint ({load_error_reason(err)})") from None
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
            return load_file(single)
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_file(path / shard))
            return state
        for name in ("pytorch_model.bin", "model.pt"):
            if (path / name).exists():
                return load_torch_weights(path / name)
        raise FileNotFoundError(f"{path}: no model.safetensors, sharded index, or pytorch_model.bin in this directory")
    if path.suffix == ".safetensors":
        return load_file(path)
    return load_torch_weights(path)


def save_state_dict(path: str | os.PathLike, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Atomically write a safetensors file (tensors made contiguous and unshared)."""
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))
