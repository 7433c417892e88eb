"""Resolve Hugging Face Hub ids (or local directories) to local paths, with revision pinning and offline mode.

Every paper-scale loader takes a *source*: a local directory (used as is, never touched on the Hub) or a Hub
id such as ``openai/clip-vit-base-patch32``, optionally pinned to a ``revision`` (branch, tag or commit hash).
With ``HF_HUB_OFFLINE=1`` (set it for every run after ``python -m concrete_subspace.download``) a source that
is not in the local cache fails at once with a one-line :class:`NotCachedError` that names the id and revision,
instead of hanging on the network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

#: Weight formats we never download: we load safetensors (or, as a fallback, PyTorch .bin with weights_only).
IGNORE_PATTERNS: tuple[str, ...] = (
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "*.ot",
    "*.tflite",
    "tf_*",
    "flax_*",
    "rust_model*",
    "*.mlmodel",
    "coreml/*",
    "onnx/*",
    "openvino/*",
)

_TRUE = {"1", "true", "yes", "on"}


class NotCachedError(FileNotFoundError):
    """A Hub id/revision is not in the local cache while the Hub is offline (or could not be reached)."""


def is_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set now, even if set after huggingface_hub was imported."""
    if any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return False


def describe(repo_id: str, revision: str | None) -> str:
    """'id@revision' as used in every message (revision 'main' when unpinned)."""
    return f"{repo_id}@{revision or 'main'}"


def is_local(source: str | os.PathLike) -> bool:
    """True when ``source`` is an existing local directory or file (then no Hub call is ever made)."""
    return Path(source).expanduser().exists()


def resolve(
    source: str | os.PathLike,
    revision: str | None = None,
    *,
    repo_type: str = "model",
    allow_patterns: Sequence[str] | None = None,
    ignore_patterns: Sequence[str] | None = IGNORE_PATTERNS,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """Local path of a directory or Hub snapshot; downloads only when online and not forced to local files.

    ``local_files_only`` defaults to :func:`is_offline`. A missing snapshot raises :class:`NotCachedError`
    naming ``id@revision`` and the command that prefetches it.
    """
    path = Path(source).expanduser()
    if path.exists():
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} given for local path {str(path)!r}; revisions apply to Hub ids only"
            )
        return path
    repo_id = str(source)
    if repo_id.count("/") != 1 or repo_id.startswith(("/", ".")):
        raise FileNotFoundError(f"{repo_id!r} is neither an existing local path nor a Hub id of the form 'owner/name'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = is_offline() if local_files_only is None else local_files_only
    try:
        return Path(
            snapshot_download(
                repo_id,
                repo_type=repo_type,
                revision=revision,
                cache_dir=cache_dir,
                allow_patterns=list(allow_patterns) if allow_patterns else None,
                ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
                local_files_only=offline,
            )
        )
    except LocalEntryNotFoundError as err:
        raise NotCachedError(not_cached_message(repo_id, revision, repo_type, offline)) from err
    except OSError as err:  # network failures surface as OSError subclasses (requests/httpx errors)
        if offline:
            raise NotCachedError(not_cached_message(repo_id, revision, repo_type, offline)) from err
        raise


def not_cached_message(repo_id: str, revision: str | None, repo_type: str = "model", offline: bool = True) -> str:
    """The one-line error for a snapshot missing from the cache."""
    why = "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"
    return (
        f"{repo_type} {describe(repo_id, revision)} is not in the local Hugging Face cache and {why}; "
        f"prefetch it with `python -m concrete_subspace.download` (online) or pass a local directory"
    )


def resolved_commit(path: str | os.PathLike) -> str | None:
    """Commit hash of a Hub cache snapshot path (``.../snapshots/<hash>``), None for other local paths."""
    p = Path(path)
    return p.name if p.parent.name == "snapshots" and len(p.name) == 40 else None


def load_dataset_split(
    dataset_id: str,
    split: str,
    *,
    name: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """``datasets.load_dataset(id, name, split=...)`` (or ``load_from_disk`` for a local saved dataset) with a clear offline error."""
    import datasets

    path = Path(dataset_id).expanduser()
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    try:
        return datasets.load_dataset(
            str(dataset_id), name, split=split, revision=revision, cache_dir=str(cache_dir) if cache_dir else None
        )
    except (ConnectionError, FileNotFoundError, ValueError) as err:
        offline = is_offline() or os.environ.get("HF_DATASETS_OFFLINE", "").strip().lower() in _TRUE
        if offline and not path.exists():
            config = f" (config {name!r}, split {split!r})" if name else f" (split {split!r})"
            raise NotCachedError(
                not_cached_message(str(dataset_id), revision, "dataset", True).replace(
                    describe(str(dataset_id), revision), describe(str(dataset_id), revision) + config, 1
                )
            ) from err
        raise
