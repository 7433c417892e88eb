"""Files of a zoo: expert weights in either transformers key layout, atomic JSON, quiet library progress bars."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..checkpoint import atomic_path


def save_vision_model(vision_model, path: Path) -> None:
    """Save a CLIPVisionModel directory with "vision_model."-prefixed keys (the Hub / transformers 4 layout,
    which transformers 5 also loads), so libraries pinned to either major version read the same files."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    vision_model.config.save_pretrained(path)
    state = {f"vision_model.{k}": v.detach().contiguous() for k, v in vision_model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


def load_vision_state(path: Path, keys: Sequence[str], device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """The merged parameters (``keys``, "vision_model."-prefixed) of a saved CLIPVisionModel, either key layout."""
    from safetensors.torch import load_file

    file = path / "model.safetensors"
    if not file.exists():
        raise FileNotFoundError(f"no model.safetensors in {path}")
    state = load_file(str(file), device=str(device))
    state = {(k if k.startswith("vision_model.") else f"vision_model.{k}"): v for k, v in state.items()}
    missing = [k for k in keys if k not in state]
    if missing:
        raise KeyError(f"{file} lacks {len(missing)} of the merged keys, e.g. {missing[:3]}")
    return {k: state[k] for k in keys}


@contextlib.contextmanager
def quiet_library_bars() -> Iterator[None]:
    """Silence the datasets / transformers progress bars (ours show the stages), restoring them afterwards."""
    import datasets
    from transformers.utils import logging as hf_logging

    ds_on, hf_on = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if ds_on:
            datasets.enable_progress_bars()
        if hf_on:
            hf_logging.enable_progress_bar()


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write the manifest's JSON atomically (:func:`checkpoint.atomic_path`). Unlike ``checkpoint.atomic_write_json``
    it keeps NaN as ``NaN`` (the entropy statistics of a degenerate split are NaN) and adds no final newline, so a
    manifest's bytes stay those of the zoos already built."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, allow_nan=True)
