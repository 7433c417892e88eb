"""Device and dtype helpers for paper-scale runs: parse user arguments, record peak GPU memory."""

from __future__ import annotations

import torch

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def as_device(device: torch.device | str | None) -> torch.device:
    """torch.device from a string/None (None -> 'cuda' when available, else 'cpu')."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """torch floating dtype from 'float32'/'bf16'/... or a dtype (None -> float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        return dtype
    try:
        return _DTYPES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


def warn_low_precision_states(dtype: torch.dtype, where: str) -> None:
    """Warn that fine-tuned weights rounded to a 16-bit dtype before θ_t − θ0 lose most of the task vector."""
    if dtype != torch.float32:
        import warnings

        warnings.warn(
            f"{where}: dtype={str(dtype).removeprefix('torch.')} rounds θ0 and θ_t before the task vector "
            f"θ_t − θ0 is formed (its rounding error is as large as the vector); load in float32 and "
            f"store task vectors in bfloat16 with the methods' vector_dtype='bfloat16' instead",
            UserWarning,
            stacklevel=3,
        )


def reset_peak_memory(device: torch.device | str | None) -> None:
    """Reset the CUDA peak-memory counter of ``device`` (no-op on CPU)."""
    device = as_device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device | str | None) -> int | None:
    """Peak bytes allocated by tensors on a CUDA ``device`` since the last reset; None on CPU (not tracked)."""
    device = as_device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated(device))
    return None
