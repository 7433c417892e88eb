"""The merge problem behind a notebook: the mini zoo, the mini-text zoo or the paper's models."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from ..problem import MergeProblem
from .configs import BaseConfig, check_checkpoints

PROBLEM_SCALES = ("mini", "mini-text", "paper")


def ensure_zoo(seed: int = 0, smoke: bool = False, progress: bool = True) -> Path:
    """The cached mini zoo for (seed, smoke), built first if it is missing (minutes; seconds when smoke)."""
    from .. import zoo

    return zoo.build_zoo(seed=seed, smoke=smoke, progress=progress)


def load_problem(
    scale: str = "mini",
    tasks: Sequence[str] | None = None,
    device: str = "cpu",
    split: str = "test",
    run_seed: int = 0,
    smoke: bool = False,
    *,
    zoo_seed: int = 0,
    arch: str = "ViT-B-32",
    model: str = "flan-t5-base",
    batch_size: int = 16,
    limit: int | None = None,
    zoo_dir: str | Path | None = None,
    checkpoints: str | Path | None = None,
) -> MergeProblem:
    """The MergeProblem of a scale: the mini zoo, the mini-text zoo (both built if missing) or the paper's models
    (CLIP or Flan-T5).

    ``zoo_seed`` picks which built mini (or mini-text) zoo the models come from (the shipped zoos are seed 0;
    ignored with ``zoo_dir`` and at paper scale); ``run_seed`` orders the test-time batches, never the models.

    ``split`` picks the mini zoo's test-time/evaluation split ('test' as in the paper, 'validation' for tuning);
    the paper scale always uses the test sets. ``model`` ('flan-t5-base'|'flan-t5-large') selects the GLUE problem
    at paper scale when ``arch='flan-t5'``. Paper-scale CLIP comes from the Hub (fusion_bench's fine-tuned
    models) unless ``checkpoints`` names a local folder of the paper's open_clip task_vectors checkpoints
    (``zeroshot.pt``, ``<Dataset>/finetuned.pt``; see docs/paper_scale.md section 3).
    """
    check_checkpoints(checkpoints, scale)
    if scale == "mini-text":
        from .. import text_zoo

        directory = (
            Path(zoo_dir)
            if zoo_dir is not None
            else text_zoo.build_text_zoo(seed=zoo_seed, smoke=smoke, progress=False)
        )
        return text_zoo.load_text_zoo_problem(
            directory, tasks=tasks, split=split, batch_size=batch_size, seed=run_seed, device=device
        )
    if scale == "mini":
        from .. import zoo

        directory = Path(zoo_dir) if zoo_dir is not None else ensure_zoo(zoo_seed, smoke, progress=False)
        return zoo.load_zoo_problem(
            directory, tasks=tasks, split=split, batch_size=batch_size, seed=run_seed, device=device
        )
    if scale != "paper":
        raise ValueError(f"scale must be one of {PROBLEM_SCALES}, got {scale!r}")
    if smoke:
        raise ValueError("smoke=True exists only at scale='mini'")
    if split != "test":
        raise ValueError(f"the paper scale adapts and evaluates on the test sets; split={split!r} is mini-only")
    if arch == "flan-t5" and checkpoints is not None:
        raise ValueError(
            "checkpoints= names open_clip task_vectors CLIP checkpoints; it cannot be used with arch='flan-t5'"
        )
    if arch == "flan-t5":
        from ..data.paper import GLUE_TASKS
        from ..models.flan_t5 import build_flan_t5_problem

        size = model.removeprefix("flan-t5-")
        return build_flan_t5_problem(
            size, tuple(tasks or GLUE_TASKS), device=device, batch_size=batch_size, seed=run_seed, limit=limit
        )
    from ..models.templates import VISION_TASKS

    vision_tasks = tuple(tasks or VISION_TASKS)
    common = {"device": device, "batch_size": batch_size, "seed": run_seed, "limit": limit, "progress": True}
    if checkpoints is not None:
        from ..models.open_clip_ckpt import build_open_clip_problem

        return build_open_clip_problem(checkpoints, arch, vision_tasks, **common)
    from ..models.clip_hub import build_clip_hub_problem

    return build_clip_hub_problem(arch, vision_tasks, **common)


def problem_for(config: BaseConfig, tasks: Sequence[str] | None = None, **kwargs) -> MergeProblem:
    """load_problem with the config's scale, device, run and zoo seeds and smoke (and its arch and checkpoints when it
    has them)."""
    if hasattr(config, "arch"):
        kwargs.setdefault("arch", config.arch)
    if hasattr(config, "checkpoints"):
        kwargs.setdefault("checkpoints", config.checkpoints)
    return load_problem(
        config.scale,
        tasks if tasks is not None else config.tasks,
        config.device,
        "test",
        config.run_seed,
        config.smoke,
        zoo_seed=config.zoo_seed,
        **kwargs,
    )


def restrict(problem: MergeProblem, tasks: Sequence[str]) -> MergeProblem:
    """The same problem with only ``tasks`` merged (heads and data of the others stay available for evaluation)."""
    unknown = [t for t in tasks if t not in problem.task_names]
    if unknown:
        raise KeyError(f"restrict: task(s) {unknown} not in the problem; its tasks: {list(problem.task_names)}")
    return dataclasses.replace(problem, task_names=tuple(tasks))


def problem_identity(problem: MergeProblem) -> dict:
    """What identifies the models and data behind a problem (for cache keys): zoo manifest stamp or Hub ids."""
    info = dict(problem.info)
    if info.get("scale") == "mini" and info.get("manifest"):
        manifest = json.loads(Path(info["manifest"]).read_text())
        return {
            "scale": "mini",
            "zoo_created": manifest.get("created"),
            "seed": manifest.get("seed"),  # the zoo's seed (zoo_seed); the key's name is kept so cached runs stay valid
            "smoke": manifest.get("smoke"),
            "format_version": manifest.get("format_version"),
            "split": info.get("split"),
            "variant": info.get("variant", "clean"),
        }
    return {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool, dict, list)) or v is None}
