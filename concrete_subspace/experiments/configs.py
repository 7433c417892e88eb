"""One frozen dataclass per notebook (its papermill ``parameters`` cell holds exactly its fields, each read from the
dataclass's defaults through :func:`.notebook.defaults`), and where it writes.

:func:`config_from` builds a config from a notebook's variables; :func:`out_dir` is where the notebook's tables,
figures and results JSON go; :func:`cache_root` is the run cache shared by the notebooks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..loop import check_precision

SCALES = ("mini", "paper")  # notebook scales; load_problem also takes PROBLEM_SCALES
TEST_TIME_METHODS = (
    "concrete_task_arithmetic",
    "task_wise_adamerging",
    "layer_wise_adamerging",
    "task_wise_concrete_adamerging",
    "layer_wise_concrete_adamerging",
)
HEADLINE_METHODS = (
    "task_arithmetic",
    "ties_merging",
    "concrete_task_arithmetic",
    "layer_wise_adamerging",
    "layer_wise_concrete_adamerging",
)


def _as_tuple(value: Any, name: str) -> tuple | None:
    """None stays None; a comma-separated string or any sequence becomes a tuple (papermill passes lists/strings)."""
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise TypeError(f"{name} must be None, a comma-separated string or a list, got {type(value).__name__}")


def check_checkpoints(checkpoints: Any, scale: str) -> None:
    """``checkpoints`` (a task_vectors checkpoint directory) must be None or a non-empty path, and only at paper scale."""
    if checkpoints is None:
        return
    if not isinstance(checkpoints, (str, os.PathLike)) or not str(checkpoints).strip():
        raise TypeError(f"checkpoints must be None or a directory path (task_vectors layout), got {checkpoints!r}")
    if scale != "paper":
        raise ValueError(
            f"checkpoints={str(checkpoints)!r} selects the paper's open_clip task_vectors checkpoints, "
            f"which exist only at scale='paper' (got scale={scale!r}); use scale='paper' or checkpoints=None"
        )


@dataclass(frozen=True)
class BaseConfig:
    """Fields shared by every notebook; these defaults are the only place the notebooks' defaults are written.

    - ``scale``: "mini" (offline zoo on CPU) or "paper" (Hub models on a GPU)
    - ``device``: "cpu" or "cuda"
    - ``zoo_seed``: which built zoo the models come from (mini scale; the shipped zoos are seed 0)
    - ``run_seed``: the run's randomness (test-batch order, the test-time methods' mask samples); never the models
    - ``tasks``: None for all tasks of the scale, else a subset
    - ``steps``: None for the scale's defaults (at mini the zoo's ``MINI_DEFAULTS``), else every method's steps
    - ``smoke``: True for the tiny zoo and 2 steps (CI)
    - ``figures_dir``: outputs go to ``figures_dir/<scale>[-smoke]/<notebook>/``
    - ``cache_dir``: None for ``~/.cache/concrete_subspace/results`` (shared by the notebooks)
    - ``precision``: "fp32" or "bf16", passed to every test-time method (bf16: autocast forward, fp32 learned state)

    Notebook-specific fields (methods, arch, checkpoints: the paper's open_clip checkpoint folder at paper scale,
    seeds, sweeps) are described on each subclass.
    """

    scale: str = "mini"
    device: str = "cpu"
    zoo_seed: int = 0
    run_seed: int = 0
    tasks: tuple[str, ...] | None = None
    steps: int | None = None
    smoke: bool = False
    figures_dir: str = "figures"
    cache_dir: str | None = None
    precision: str = "fp32"

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")
        for name in ("zoo_seed", "run_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 0):
            raise ValueError(f"steps must be None or a non-negative int, got {self.steps!r}")
        if not isinstance(self.smoke, bool):
            raise TypeError(f"smoke must be True or False, got {self.smoke!r}")
        check_precision(self.precision)
        for f in fields(self):
            if f.name in (
                "tasks",
                "methods",
                "corruptions",
                "temperatures",
                "scalings",
                "eval_masks",
                "task_counts",
                "ta_scalings",
            ):
                object.__setattr__(self, f.name, _as_tuple(getattr(self, f.name), f.name))
            if f.name == "seeds":  # the run seeds of notebooks 01 and 02, as ints
                seeds = _as_tuple(self.seeds, "seeds")
                object.__setattr__(self, "seeds", None if seeds is None else tuple(int(x) for x in seeds))
        if self.scale == "paper" and self.smoke:
            raise ValueError("smoke=True is a mini-scale option (tiny zoo); use scale='mini' with smoke=True")
        check_checkpoints(getattr(self, "checkpoints", None), self.scale)


@dataclass(frozen=True)
class WalkthroughConfig(BaseConfig):
    """00_walkthrough: the method step by step on the mini zoo (or the paper models)."""

    temperatures: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class MultitaskConfig(BaseConfig):
    """01_multitask_table: every registry method + individual + zero-shot rows on all tasks.

    ``seeds``: the run seeds the test-time methods are repeated with (each as a ``run_seed``; the models stay those
    of ``zoo_seed``), so the table is a mean over seeds and each claim carries its spread; None: ``run_seed`` only.
    """

    methods: tuple[str, ...] | None = None
    arch: str = "ViT-B-32"
    checkpoints: str | None = None
    seeds: tuple[int, ...] | None = (0, 1, 2)


@dataclass(frozen=True)
class FlanT5Config(BaseConfig):
    """02_flan_t5_glue: Flan-T5 + LoRA-16 on eight GLUE tasks (paper); at scale mini the mini-text zoo (MiniLM + LoRA).

    ``seeds`` (mini only): the run seeds the test-time methods are repeated with (each as a ``run_seed``; the
    mini-text zoo stays that of ``zoo_seed``) for the orderings' spread; None: ``run_seed`` only; ``ta_scalings``
    (mini only): the λ sweep of task arithmetic with the merged model's mean entropy (the entropy premise along λ).
    """

    methods: tuple[str, ...] | None = (
        "weight_averaging",
        "task_arithmetic",
        "ties_merging",
        "concrete_task_arithmetic",
        "layer_wise_adamerging",
        "layer_wise_concrete_adamerging",
    )
    model: str = "flan-t5-base"
    limit: int | None = None
    seeds: tuple[int, ...] | None = (0, 1)
    ta_scalings: tuple[float, ...] | None = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)


@dataclass(frozen=True)
class GeneralizationConfig(BaseConfig):
    """03_generalization: merge 6 seen tasks, evaluate on them and on 2 unseen ones (two splits)."""

    methods: tuple[str, ...] | None = HEADLINE_METHODS
    arch: str = "ViT-B-32"
    checkpoints: str | None = None


@dataclass(frozen=True)
class RobustnessConfig(BaseConfig):
    """04_robustness: merge 4 tasks on corrupted unlabeled test data, evaluate on the same corruption."""

    methods: tuple[str, ...] | None = HEADLINE_METHODS
    corruptions: tuple[str, ...] | None = None
    severity: int = 3
    arch: str = "ViT-B-32"
    checkpoints: str | None = None


@dataclass(frozen=True)
class CurvesConfig(BaseConfig):
    """05_curves: accuracy over meta-learning and TTA steps, Concrete AdaMerging vs AdaMerging."""

    methods: tuple[str, ...] | None = TEST_TIME_METHODS
    arch: str = "ViT-B-32"
    checkpoints: str | None = None


@dataclass(frozen=True)
class MaskConfig(BaseConfig):
    """06_mask_analysis: learned-mask density per layer and masked individual models."""

    methods: tuple[str, ...] | None = ("concrete_task_arithmetic", "layer_wise_concrete_adamerging")
    arch: str = "ViT-B-32"
    checkpoints: str | None = None


@dataclass(frozen=True)
class AblationConfig(BaseConfig):
    """07_ablations: temperature, steps, λ_TA, evaluation mask, number of tasks (Concrete TA vs TA)."""

    temperatures: tuple[float, ...] | None = (0.2, 0.5, 1.0, 2.0)
    scalings: tuple[float, ...] | None = (0.3, 0.5, 0.7)
    ta_scalings: tuple[float, ...] | None = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    eval_masks: tuple[str, ...] | None = ("sample", "expected", "hard", "bernoulli")
    task_counts: tuple[int, ...] | None = (2, 4, 6, 8)
    arch: str = "ViT-B-32"
    checkpoints: str | None = None


CONFIGS: dict[str, type[BaseConfig]] = {
    "00_walkthrough": WalkthroughConfig,
    "01_multitask_table": MultitaskConfig,
    "02_flan_t5_glue": FlanT5Config,
    "03_generalization": GeneralizationConfig,
    "04_robustness": RobustnessConfig,
    "05_curves": CurvesConfig,
    "06_mask_analysis": MaskConfig,
    "07_ablations": AblationConfig,
}


THREADS_ENV = "CONCRETE_SUBSPACE_THREADS"


def set_threads(config: BaseConfig) -> int:
    """Fix torch's CPU threads for a notebook run: $CONCRETE_SUBSPACE_THREADS if set, else 1 at mini scale on CPU.

    Why 1: on this project's 2-core machine, 2 threads are only 1.1-1.45x faster when the machine is idle, but
    while one other busy process shares it a 10-step Concrete TA run took 153 s instead of 1.8 s (threads spin
    waiting for a core). Paper scale keeps torch's default. Returns the thread count in force.
    """
    value = os.environ.get(THREADS_ENV)
    if value is not None:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"${THREADS_ENV} must be a positive integer, got {value!r}")
        torch.set_num_threads(int(value))
    elif config.scale == "mini" and str(config.device).startswith("cpu"):
        torch.set_num_threads(1)
    return torch.get_num_threads()


#: Parameters a notebook no longer has, with what replaced them (papermill injects unknown parameters silently).
RENAMED = {
    "seed": "`seed` is now two parameters: zoo_seed (which built zoo: the models) and run_seed (test-batch order "
    "and mask samples); pass -p zoo_seed N and/or -p run_seed N"
}


def config_from(cls: type[BaseConfig], namespace: Mapping[str, Any]) -> BaseConfig:
    """Build ``cls`` from a notebook's variables (exactly its fields); names a missing or renamed parameter clearly."""
    renamed = [name for name in RENAMED if name in namespace and name not in {f.name for f in fields(cls)}]
    if renamed:
        raise TypeError(f"{cls.__name__}: {RENAMED[renamed[0]]}")
    missing = [f.name for f in fields(cls) if f.name not in namespace]
    if missing:
        raise KeyError(
            f"{cls.__name__}: the parameters cell lacks {missing}; it must define every field "
            f"{[f.name for f in fields(cls)]}"
        )
    return cls(**{f.name: namespace[f.name] for f in fields(cls)})


def out_dir(config: BaseConfig, name: str) -> Path:
    """Where a notebook writes its outputs: <figures_dir>/<scale>[-smoke]/<name>/."""
    return Path(config.figures_dir) / f"{config.scale}{'-smoke' if config.smoke else ''}" / name


def cache_root(config: BaseConfig) -> Path:
    """The run cache: config.cache_dir, else $CONCRETE_SUBSPACE_CACHE/results, else ~/.cache/concrete_subspace/results."""
    if config.cache_dir:
        return Path(config.cache_dir)
    root = os.environ.get("CONCRETE_SUBSPACE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "concrete_subspace") / "results"
