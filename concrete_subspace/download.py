"""Prefetch (and verify) every paper-scale model and dataset into the Hugging Face cache.

    python -m concrete_subspace.download                       # everything (needs network; tens of GB)
    python -m concrete_subspace.download --what clip-b32,vision-data
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m concrete_subspace.download --what clip-b32   # verify only
    python -m concrete_subspace.download --dry-run             # list what would be fetched

Groups (``--what``): ``clip-b32``, ``clip-l14`` (pre-trained CLIP + eight fine-tuned vision models each),
``vision-data`` (the eight test splits), ``glue`` (eight GLUE evaluation splits), ``flan-t5-base``,
``flan-t5-large`` (base model + eight LoRA-16 adapters each), ``open-clip`` (open_clip's OpenAI ViT-B-32 and
ViT-L-14, the text towers for task_vectors checkpoints). The task_vectors checkpoints themselves are not on the
Hub: see docs/paper_scale.md. Each item is verified after fetching (config and weight headers readable,
dataset split non-empty); a manifest with the resolved commit of every snapshot can be written with
``--manifest`` and pinned later through the ``revisions`` arguments of the loaders.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .data.paper import GLUE_DATASET_ID, GLUE_SPLITS, GLUE_TASKS, VISION_DATASETS
from .models.clip_hub import finetuned_id, pretrained_id
from .models.flan_t5 import adapter_id, base_id
from .models.hub import describe, resolve, resolved_commit
from .models.templates import VISION_TASKS
from .status import show_status

log = logging.getLogger(__name__)

GROUPS: tuple[str, ...] = ("clip-b32", "clip-l14", "vision-data", "glue", "flan-t5-base", "flan-t5-large", "open-clip")


@dataclass(frozen=True)
class Item:
    """One thing to fetch: a Hub model snapshot, a dataset split, or an open_clip pretrained tag."""

    kind: str  # "model" | "adapter" | "dataset" | "open_clip"
    id: str
    config: str | None = None
    split: str | None = None
    group: str = ""


@dataclass
class Outcome:
    """Result of fetching/verifying one item."""

    item: Item
    ok: bool
    path: str | None = None
    commit: str | None = None
    detail: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def plan(what: Sequence[str] | None = None) -> list[Item]:
    """The items of the requested groups (all groups by default), in a stable order."""
    groups = list(what) if what else list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown download group(s) {unknown}; choose from {list(GROUPS)}")
    items: list[Item] = []
    for g in groups:
        if g in ("clip-b32", "clip-l14"):
            arch = "ViT-B-32" if g == "clip-b32" else "ViT-L-14"
            items.append(Item("model", pretrained_id(arch), group=g))
            items += [Item("model", finetuned_id(t, arch), group=g) for t in VISION_TASKS]
        elif g == "vision-data":
            items += [Item("dataset", s.dataset_id, s.config, s.split, group=g) for s in VISION_DATASETS.values()]
        elif g == "glue":
            items += [Item("dataset", GLUE_DATASET_ID, t, GLUE_SPLITS[t], group=g) for t in GLUE_TASKS]
        elif g in ("flan-t5-base", "flan-t5-large"):
            size = g.rsplit("-", 1)[1]
            items.append(Item("model", base_id(size), group=g))
            items += [Item("adapter", adapter_id(t, size), group=g) for t in GLUE_TASKS]
        elif g == "open-clip":
            items += [Item("open_clip", arch, "openai", group=g) for arch in ("ViT-B-32", "ViT-L-14")]
    return items


def verify_model_dir(path: str | os.PathLike, kind: str = "model") -> str:
    """Check a model/adapter snapshot: its config parses and every safetensors header opens; returns a summary."""
    path = Path(path)
    config = path / ("adapter_config.json" if kind == "adapter" else "config.json")
    if not config.exists():
        raise FileNotFoundError(f"{path}: no {config.name}")
    json.loads(config.read_text())
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not weights:
        raise FileNotFoundError(f"{path}: no weight files (*.safetensors or *.bin)")
    tensors = 0
    for file in weights:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                tensors += len(list(handle.keys()))
    return f"{len(weights)} weight file(s)" + (f", {tensors} tensors" if tensors else "")


def fetch(item: Item, *, revision: str | None = None, cache_dir: str | None = None, verify: bool = True) -> Outcome:
    """Fetch one item into the cache (or only find it there when offline) and verify it; never raises."""
    start = time.perf_counter()
    try:
        if item.kind in ("model", "adapter"):
            path = resolve(item.id, revision, cache_dir=cache_dir)
            detail = verify_model_dir(path, item.kind) if verify else "fetched"
            return Outcome(item, True, str(path), resolved_commit(path), detail, time.perf_counter() - start)
        if item.kind == "dataset":
            from .models.hub import load_dataset_split

            data = load_dataset_split(item.id, item.split, name=item.config, revision=revision, cache_dir=cache_dir)
            if verify and len(data) == 0:
                raise ValueError(f"{item.id} {item.config or ''} split {item.split!r} is empty")
            fingerprint = getattr(data, "_fingerprint", None)
            return Outcome(
                item,
                True,
                None,
                None,
                f"{len(data)} rows",
                time.perf_counter() - start,
                {"fingerprint": fingerprint, "features": list(data.features)},
            )
        if item.kind == "open_clip":
            from .models.open_clip_ckpt import create_open_clip

            model, _, _ = create_open_clip(item.id, item.config, device="cpu", cache_dir=cache_dir)
            n = sum(p.numel() for p in model.parameters())
            return Outcome(item, True, None, None, f"{n / 1e6:.1f}M parameters", time.perf_counter() - start)
        raise ValueError(f"unknown item kind {item.kind!r}")
    except Exception as err:  # report and go on: one missing item must not hide the others
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        return Outcome(item, False, detail=f"{type(err).__name__}: {message}", seconds=time.perf_counter() - start)


def download_all(
    what: Sequence[str] | None = None,
    *,
    revisions: dict[str, str] | None = None,
    cache_dir: str | None = None,
    verify: bool = True,
    dry_run: bool = False,
    manifest: str | os.PathLike | None = None,
    progress: bool = True,
) -> list[Outcome]:
    """Fetch and verify every item of ``what`` (default: all groups); returns one :class:`Outcome` per item.

    ``revisions`` maps Hub ids to pins. With ``HF_HUB_OFFLINE=1`` nothing is downloaded and the call only
    verifies the cache. ``manifest`` writes ids, resolved commits and outcomes as JSON (atomically).
    """
    revisions = dict(revisions or {})
    items = plan(what)
    outcomes = []
    for i, item in enumerate(items, 1):
        label = describe(item.id, revisions.get(item.id)) + (f" [{item.config}/{item.split}]" if item.split else "")
        if dry_run:
            outcomes.append(Outcome(item, True, detail="dry run"))
            if progress:
                log.info(f"[{i}/{len(items)}] {item.kind:9s} {label}")
            continue
        outcome = fetch(item, revision=revisions.get(item.id), cache_dir=cache_dir, verify=verify)
        outcomes.append(outcome)
        if progress:
            status = "ok  " if outcome.ok else "FAIL"
            log.info(f"[{i}/{len(items)}] {status} {item.kind:9s} {label}: {outcome.detail} ({outcome.seconds:.1f}s)")
    if manifest is not None:
        write_manifest(outcomes, manifest)
    return outcomes


def write_manifest(outcomes: Sequence[Outcome], path: str | os.PathLike) -> Path:
    """Write the outcomes as JSON, atomically."""
    from .checkpoint import atomic_write_json

    rows = [{**asdict(o.item), **{k: v for k, v in asdict(o).items() if k != "item"}} for o in outcomes]
    return atomic_write_json(path, {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "items": rows})


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; exit status 1 when any item failed."""
    parser = argparse.ArgumentParser(prog="python -m concrete_subspace.download", description=__doc__.split("\n\n")[0])
    parser.add_argument("--what", default="", help=f"comma-separated groups (default: all): {','.join(GROUPS)}")
    parser.add_argument("--cache-dir", default=None, help="Hugging Face cache directory (default: HF_HOME's)")
    parser.add_argument(
        "--revision", action="append", default=[], metavar="ID=REV", help="pin a Hub id to a revision (repeatable)"
    )
    parser.add_argument("--manifest", default=None, help="write a JSON manifest of ids, commits and outcomes here")
    parser.add_argument("--no-verify", action="store_true", help="skip the checks after fetching")
    parser.add_argument("--dry-run", action="store_true", help="only list what would be fetched")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `concrete-subspace download -- --what ...` passes the separator through
        argv = argv[1:]
    args = parser.parse_args(argv)
    revisions = {}
    for pin in args.revision:
        if "=" not in pin:
            parser.error(f"--revision expects ID=REV, got {pin!r}")
        key, value = pin.split("=", 1)
        revisions[key] = value
    what = [w.strip() for w in args.what.split(",") if w.strip()] or None
    show_status()
    try:
        outcomes = download_all(
            what,
            revisions=revisions,
            cache_dir=args.cache_dir,
            verify=not args.no_verify,
            dry_run=args.dry_run,
            manifest=args.manifest,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = [o for o in outcomes if not o.ok]
    print(f"{len(outcomes) - len(failed)} ok, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
