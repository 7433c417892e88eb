"""Merged forward passes through ``torch.func.functional_call``: the module is a template, never deep-copied."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn
from torch.func import functional_call


def forward(model: nn.Module, params: Mapping[str, Tensor] | None, inputs: Any) -> Any:
    """Run ``model`` with ``params`` substituted for its own (others unchanged); dict inputs become kwargs."""
    if params is None:
        return model(**inputs) if isinstance(inputs, dict) else model(inputs)
    if isinstance(inputs, dict):
        return functional_call(model, dict(params), args=(), kwargs=inputs, strict=False)
    return functional_call(model, dict(params), (inputs,), strict=False)
