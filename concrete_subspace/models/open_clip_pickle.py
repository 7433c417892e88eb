"""Reading the paper's open_clip checkpoints safely: state dicts with ``torch.load(weights_only=True)``; whole pickled
modules only with ``allow_pickle=True``, through a restricted unpickler (see :mod:`.open_clip_ckpt`'s docstring)."""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint import load_error_reason
from ..state_io import UnsafeCheckpointError

_ALLOWED_MODULE_PREFIXES = (
    "torch",
    "collections",
    "open_clip",
    "torchvision",
    "numpy",
    "PIL",
    "src",
    "functools",
    "copyreg",
    "_codecs",
    "typing",
    "enum",
    "timm",
)
_SAFE_BUILTINS = {
    "set",
    "frozenset",
    "dict",
    "list",
    "tuple",
    "slice",
    "object",
    "float",
    "int",
    "bool",
    "str",
    "bytes",
    "bytearray",
    "complex",
    "range",
}
_STUBS: dict[tuple[str, str], type] = {}


def _stub_class(module: str, name: str) -> type:
    """An inert nn.Module subclass standing in for an unimportable class (e.g. task_vectors' src.modeling.ImageEncoder)."""
    key = (module, name)
    if key not in _STUBS:
        _STUBS[key] = type(
            name,
            (nn.Module,),
            {"__module__": f"concrete_subspace.stub.{module}", "__doc__": f"Stub for {module}.{name} (state only)."},
        )
    return _STUBS[key]


def _allowed_global(module: str, name: str, obj: Any) -> bool:
    """Globals the opt-in unpickler may return: classes, dtypes and tensor-rebuild helpers of allowed libraries."""
    if module in ("builtins", "__builtin__"):  # protocol 2 pickles name it __builtin__
        return name in _SAFE_BUILTINS
    if not module.startswith(_ALLOWED_MODULE_PREFIXES):
        return False
    if isinstance(obj, (type, torch.dtype, torch.device)):
        return True
    qualified = f"{module}.{name}"
    return qualified.startswith(
        (
            "torch._utils._rebuild",
            "torch._tensor._rebuild",
            "torch.nn.parameter",
            "numpy.core.multiarray._reconstruct",
            "numpy._core.multiarray._reconstruct",
            "numpy.core.multiarray.scalar",
            "numpy._core.multiarray.scalar",
            "copyreg._reconstructor",
            "copyreg.__newobj__",
            "_codecs.encode",
            "torch.serialization._get_layout",
            "torch._utils._rebuild_parameter",
        )
    ) or module.startswith(("open_clip", "torchvision.transforms"))


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for the allow_pickle opt-in: allow-listed globals only; unimportable model classes become stubs."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            obj = super().find_class(module, name)
        except (ImportError, AttributeError):
            if module.startswith(("src.", "open_clip", "__main__")) or module == "src":
                return _stub_class(module, name)
            raise UnsafeCheckpointError(f"checkpoint references {module}.{name}, which cannot be imported") from None
        if not _allowed_global(module, name, obj):
            raise UnsafeCheckpointError(
                f"refusing to unpickle global {module}.{name} (not on the allow-list for allow_pickle=True checkpoints)"
            )
        return obj


_restricted_pickle = ModuleType("concrete_subspace_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler
_restricted_pickle.load = lambda file, **kwargs: _RestrictedUnpickler(file, **kwargs).load()
_restricted_pickle.__name__ = "pickle"  # torch.load checks the module's name for legacy formats


def _as_state_dict(obj: Any, path: str | os.PathLike) -> dict[str, Tensor]:
    """A loaded checkpoint object (module, {'state_dict': ...} or mapping) -> flat {name: tensor}."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise TypeError(f"{path}: expected a state dict or a module, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise TypeError(f"{path}: non-tensor entries {bad[:5]} in the state dict")
    return {str(k): v for k, v in obj.items()}


def load_checkpoint(
    path: str | os.PathLike, *, allow_pickle: bool = False, map_location: Any = "cpu"
) -> dict[str, Tensor]:
    """State dict of a task_vectors checkpoint: safetensors, or torch.load(weights_only=True).

    A whole pickled module (the format of the released files) is refused unless ``allow_pickle=True``; then a
    warning is issued and the restricted unpickler described in the module docstring is used.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device=str(map_location))
    try:
        return _as_state_dict(torch.load(path, map_location=map_location, weights_only=True), path)
    except pickle.UnpicklingError as err:
        if not allow_pickle:
            raise UnsafeCheckpointError(
                f"{path} is not a plain state dict (torch.load(weights_only=True) refused it: "
                f"{load_error_reason(err)}). If it is a task_vectors checkpoint you trust, pass "
                f"allow_pickle=True once and convert it with convert_checkpoint()."
            ) from None
    warnings.warn(
        f"allow_pickle=True: unpickling {path} with a restricted unpickler; only do this for files "
        f"from a source you trust",
        UserWarning,
        stacklevel=2,
    )
    obj = torch.load(path, map_location=map_location, weights_only=False, pickle_module=_restricted_pickle)
    return _as_state_dict(obj, path)


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, allow_pickle: bool = False) -> Path:
    """Write ``src``'s state dict to ``dst`` as safetensors (atomically), so later loads need no pickle."""
    from safetensors.torch import save_file

    from ..checkpoint import atomic_path

    state = load_checkpoint(src, allow_pickle=allow_pickle)
    with atomic_path(dst) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"source": Path(src).name})
    return Path(dst)
