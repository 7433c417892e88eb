"""Experiment configs and runners behind the notebooks: one frozen dataclass per notebook, tidy tables, results JSON.

Each notebook's papermill ``parameters`` cell holds exactly the fields of its config dataclass
(:func:`config_from` builds the config from the notebook's variables). Runners take a config, return tidy
``pandas`` tables (one row per method x task), and :func:`write_outputs` saves them as CSV + Markdown next to a
results JSON (resolved parameters, seed, package versions, device, wall time), written atomically.

Merge runs are cached on disk under a key that hashes everything that changes their result (scale, seed,
smoke, zoo identity, data variant, tasks, method and its resolved parameters, and a fingerprint of the code that
computes it: the package source the method, the problem and the scoring reach, plus the versions of the numeric
packages; see :func:`provenance.code_fingerprint`): the notebooks share runs (the curves notebook reuses the
table's runs, the mask notebook reuses their mask logits), a change to one method's code recomputes that
method's runs only, and an interrupted run resumes from its checkpoint. Cache root: ``$CONCRETE_SUBSPACE_CACHE/results`` or
``~/.cache/concrete_subspace/results`` (never inside git).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

from .checkpoint import atomic_write_bytes, atomic_write_json
from .evaluation import average, evaluate
from .loop import check_precision
from .merging import masked_merge, task_arithmetic
from .registry import METHODS, get_method, run_method, stream_task_vectors
from .masks import evaluation_mask
from .problem import MergeProblem
from .provenance import code_fingerprint, kernel_info, lock_info
from .task_vectors import task_vector

SCALES = ("mini", "paper")  # notebook scales; load_problem also takes PROBLEM_SCALES
PROBLEM_SCALES = ("mini", "mini-text", "paper")
STEP_KEYS = ("steps", "meta_steps", "tta_steps")
SMOKE_STEPS = 2
SMOKE_OVERRIDES: dict[str, dict[str, Any]] = {"fisher_merging": {"num_examples": 16}, "regmean": {"num_examples": 32}}
CURVE_POINTS = 5  # accuracy is evaluated this many times along every test-time run (curves for free)
# Used when the zoo's MINI_DEFAULTS has no step count for a method (chosen for the 45-minute `make figures`).
MINI_FALLBACK_STEPS: dict[str, int] = {"steps": 100, "meta_steps": 60, "tta_steps": 60}
# Robustness repeats every test-time run for 8 conditions: at mini scale (steps=None) each runs this many steps.
MINI_ROBUSTNESS_STEPS = 50
NON_SEMANTIC = ("progress", "checkpoint_dir", "checkpoint_every", "resume", "log_every")

# Paper-scale task sets and their mini-zoo analogues (same roles: which tasks are held out / corrupted).
PAPER_GENERALIZATION_SPLITS = {"exp1": ("mnist", "eurosat"), "exp2": ("resisc45", "svhn")}
MINI_GENERALIZATION_SPLITS = {"exp1": ("mnist", "landcover"), "exp2": ("textures", "digits")}
PAPER_ROBUSTNESS_TASKS = ("cars", "eurosat", "resisc45", "gtsrb")
MINI_ROBUSTNESS_TASKS = ("letters", "landcover", "textures", "signs")
TEST_TIME_METHODS = ("concrete_task_arithmetic", "task_wise_adamerging", "layer_wise_adamerging",
                     "task_wise_concrete_adamerging", "layer_wise_concrete_adamerging")
HEADLINE_METHODS = ("task_arithmetic", "ties_merging", "concrete_task_arithmetic", "layer_wise_adamerging",
                    "layer_wise_concrete_adamerging")


# ================================================================================================ configs
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
        raise ValueError(f"checkpoints={str(checkpoints)!r} selects the paper's open_clip task_vectors checkpoints, "
                         f"which exist only at scale='paper' (got scale={scale!r}); use scale='paper' or checkpoints=None")


@dataclass(frozen=True)
class BaseConfig:
    """Fields shared by every notebook: scale (mini|paper), device, seed, tasks (None = all), steps (None = defaults), smoke.

    ``precision`` (fp32|bf16) is passed to every test-time method (bf16: autocast forward, fp32 learned state).
    """

    scale: str = "mini"
    device: str = "cpu"
    seed: int = 0
    tasks: tuple[str, ...] | None = None
    steps: int | None = None
    smoke: bool = False
    figures_dir: str = "figures"
    cache_dir: str | None = None
    precision: str = "fp32"

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 0):
            raise ValueError(f"steps must be None or a non-negative int, got {self.steps!r}")
        if not isinstance(self.smoke, bool):
            raise TypeError(f"smoke must be True or False, got {self.smoke!r}")
        check_precision(self.precision)
        for f in fields(self):
            if f.name in ("tasks", "methods", "corruptions", "temperatures", "scalings", "eval_masks", "task_counts",
                          "ta_scalings"):
                object.__setattr__(self, f.name, _as_tuple(getattr(self, f.name), f.name))
        if self.scale == "paper" and self.smoke:
            raise ValueError("smoke=True is a mini-scale option (tiny zoo); use scale='mini' with smoke=True")
        check_checkpoints(getattr(self, "checkpoints", None), self.scale)


@dataclass(frozen=True)
class WalkthroughConfig(BaseConfig):
    """00_walkthrough: the method step by step on the mini zoo (or the paper models)."""

    temperatures: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class MultitaskConfig(BaseConfig):
    """01_multitask_table: every registry method + individual + zero-shot rows on all tasks."""

    methods: tuple[str, ...] | None = None
    arch: str = "ViT-B-32"
    checkpoints: str | None = None


@dataclass(frozen=True)
class FlanT5Config(BaseConfig):
    """02_flan_t5_glue: Flan-T5 + LoRA-16 on eight GLUE tasks (paper); at scale mini the mini-text zoo (MiniLM + LoRA).

    ``seeds`` (mini only): the test-time methods are re-run with each seed (batch order and mask samples; the zoo
    stays seed 0) for the orderings' spread; ``ta_scalings`` (mini only): the λ sweep of task arithmetic with the
    merged model's mean entropy (the entropy premise along λ).
    """

    methods: tuple[str, ...] | None = ("weight_averaging", "task_arithmetic", "ties_merging", "concrete_task_arithmetic",
                                       "layer_wise_adamerging", "layer_wise_concrete_adamerging")
    model: str = "flan-t5-base"
    limit: int | None = None
    seeds: tuple[int, ...] | None = (0, 1)
    ta_scalings: tuple[float, ...] | None = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)

    def __post_init__(self):
        super().__post_init__()
        seeds = _as_tuple(self.seeds, "seeds")
        object.__setattr__(self, "seeds", None if seeds is None else tuple(int(x) for x in seeds))


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
    "00_walkthrough": WalkthroughConfig, "01_multitask_table": MultitaskConfig, "02_flan_t5_glue": FlanT5Config,
    "03_generalization": GeneralizationConfig, "04_robustness": RobustnessConfig, "05_curves": CurvesConfig,
    "06_mask_analysis": MaskConfig, "07_ablations": AblationConfig,
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


def config_from(cls: type[BaseConfig], namespace: Mapping[str, Any]) -> BaseConfig:
    """Build ``cls`` from a notebook's variables (exactly its fields); names a missing parameter clearly."""
    missing = [f.name for f in fields(cls) if f.name not in namespace]
    if missing:
        raise KeyError(f"{cls.__name__}: the parameters cell lacks {missing}; it must define every field "
                       f"{[f.name for f in fields(cls)]}")
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


# ================================================================================================ problems
def ensure_zoo(seed: int = 0, smoke: bool = False, progress: bool = True) -> Path:
    """The cached mini zoo for (seed, smoke), built first if it is missing (minutes; seconds when smoke)."""
    from . import zoo

    return zoo.build_zoo(seed=seed, smoke=smoke, progress=progress)


def load_problem(scale: str = "mini", tasks: Sequence[str] | None = None, device: str = "cpu", split: str = "test",
                 seed: int = 0, smoke: bool = False, *, arch: str = "ViT-B-32", model: str = "flan-t5-base",
                 batch_size: int = 16, limit: int | None = None, zoo_dir: str | Path | None = None,
                 checkpoints: str | Path | None = None) -> MergeProblem:
    """The MergeProblem of a scale: the mini zoo, the mini-text zoo (both built if missing; the mini-text zoo is
    always seed 0, ``seed`` then orders the test-time batches) or the paper's models (CLIP or Flan-T5).

    ``split`` picks the mini zoo's test-time/evaluation split ('test' as in the paper, 'validation' for tuning);
    the paper scale always uses the test sets. ``model`` ('flan-t5-base'|'flan-t5-large') selects the GLUE problem
    at paper scale when ``arch='flan-t5'``. Paper-scale CLIP comes from the Hub (fusion_bench's fine-tuned
    models) unless ``checkpoints`` names a local folder of the paper's open_clip task_vectors checkpoints
    (``zeroshot.pt``, ``<Dataset>/finetuned.pt``; see docs/paper_scale.md section 3).
    """
    check_checkpoints(checkpoints, scale)
    if scale == "mini-text":
        from . import text_zoo

        directory = Path(zoo_dir) if zoo_dir is not None else text_zoo.build_text_zoo(seed=0, smoke=smoke, progress=False)
        return text_zoo.load_text_zoo_problem(directory, tasks=tasks, split=split, batch_size=batch_size, seed=seed,
                                              device=device)
    if scale == "mini":
        from . import zoo

        directory = Path(zoo_dir) if zoo_dir is not None else ensure_zoo(seed, smoke, progress=False)
        return zoo.load_zoo_problem(directory, tasks=tasks, split=split, batch_size=batch_size, seed=seed, device=device)
    if scale != "paper":
        raise ValueError(f"scale must be one of {PROBLEM_SCALES}, got {scale!r}")
    if smoke:
        raise ValueError("smoke=True exists only at scale='mini'")
    if split != "test":
        raise ValueError(f"the paper scale adapts and evaluates on the test sets; split={split!r} is mini-only")
    if arch == "flan-t5" and checkpoints is not None:
        raise ValueError("checkpoints= names open_clip task_vectors CLIP checkpoints; it cannot be used with arch='flan-t5'")
    if arch == "flan-t5":
        from .data.paper import GLUE_TASKS
        from .models.flan_t5 import build_flan_t5_problem

        size = model.removeprefix("flan-t5-")
        return build_flan_t5_problem(size, tuple(tasks or GLUE_TASKS), device=device, batch_size=batch_size,
                                     seed=seed, limit=limit)
    from .models.templates import VISION_TASKS

    if checkpoints is not None:
        from .models.open_clip_ckpt import build_open_clip_problem

        return build_open_clip_problem(checkpoints, arch, tuple(tasks or VISION_TASKS), device=device,
                                       batch_size=batch_size, seed=seed, limit=limit, progress=True)
    from .models.clip_hub import build_clip_hub_problem

    return build_clip_hub_problem(arch, tuple(tasks or VISION_TASKS), device=device, batch_size=batch_size, seed=seed,
                                  limit=limit, progress=True)


def problem_for(config: BaseConfig, tasks: Sequence[str] | None = None, **kwargs) -> MergeProblem:
    """load_problem with the config's scale, device, seed and smoke (and its arch and checkpoints when it has them)."""
    if hasattr(config, "arch"):
        kwargs.setdefault("arch", config.arch)
    if hasattr(config, "checkpoints"):
        kwargs.setdefault("checkpoints", config.checkpoints)
    return load_problem(config.scale, tasks if tasks is not None else config.tasks, config.device, "test",
                        config.seed, config.smoke, **kwargs)


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
        return {"scale": "mini", "zoo_created": manifest.get("created"), "seed": manifest.get("seed"),
                "smoke": manifest.get("smoke"), "format_version": manifest.get("format_version"),
                "split": info.get("split"), "variant": info.get("variant", "clean")}
    return {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool, dict, list)) or v is None}


# ================================================================================================ parameters
def mini_defaults() -> dict[str, dict[str, Any]]:
    """Per-method mini-scale defaults from the zoo (chosen on the validation split).

    Imported unconditionally: a fallback to registry defaults on ImportError would silently change the
    hyper-parameters behind a figure.
    """
    from .zoo import MINI_DEFAULTS

    return {k: dict(v) for k, v in MINI_DEFAULTS.items()}


def method_params(name: str, *, scale: str = "mini", steps: int | None = None, smoke: bool = False,
                  overrides: Mapping[str, Any] | None = None, precision: str | None = None) -> dict[str, Any]:
    """The parameters a notebook runs ``name`` with: registry defaults <- mini defaults <- steps/smoke <- overrides.

    ``precision`` (None: the method's default) is set on the methods that take one (the test-time methods).

    Test-time methods also get ``eval_every`` (accuracy logged CURVE_POINTS times per stage, so every run yields
    its accuracy curve) and a quiet progress bar at mini scale.
    """
    defaults = get_method(name).defaults
    params: dict[str, Any] = {}
    if scale == "mini":
        params.update(mini_defaults().get(name, {}))
    for key in STEP_KEYS:
        if key not in defaults:
            continue
        if steps is not None:
            params[key] = steps
        elif smoke:
            params[key] = SMOKE_STEPS
        elif scale == "mini" and key not in params:
            params[key] = MINI_FALLBACK_STEPS[key]
    if smoke:
        params.update(SMOKE_OVERRIDES.get(name, {}))
    if precision is not None and "precision" in defaults:
        params["precision"] = precision
    params.update(overrides or {})
    unknown = [k for k in params if k not in defaults]
    if unknown:
        raise KeyError(f"method_params: {name!r} has no parameter(s) {unknown}; valid: {list(defaults)}")
    step_counts = [params.get(k, defaults[k]) for k in STEP_KEYS if k in defaults]
    if step_counts:  # smoke: only the first and last point (each evaluation costs many steps)
        points = 1 if smoke else CURVE_POINTS
        params.setdefault("eval_every", max(1, max(step_counts) // points))
    if "progress" in defaults:
        params.setdefault("progress", scale == "paper")
    return params


# ================================================================================================ run cache
@dataclass
class RunRecord:
    """One cached merge run: its scores (percent), history, resolved params, JSON-able extras and wall time."""

    key: str
    method: str
    tasks: tuple[str, ...]
    params: dict
    scores: dict[str, float]
    history: list[dict]
    extras: dict
    seconds: float
    directory: Path
    cached: bool = False
    code: str = ""
    context: dict = field(default_factory=dict)
    computed_at: str = ""

    @property
    def average(self) -> float:
        return average(self.scores)

    def tensor(self, name: str) -> Tensor:
        """A tensor saved with the run (e.g. 'mask_logits'), loaded from safetensors."""
        from safetensors.torch import load_file

        path = self.directory / f"{name}.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"run {self.method} ({self.key}) saved no tensor {name!r} (looked for {path})")
        return load_file(str(path))[name]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def problem_code(problem: MergeProblem) -> list:
    """The callables of a problem (data, heads, scoring, model class): their code changes what a run computes."""
    return [problem.load_finetuned, problem.task_logits, problem.unlabeled_batch, problem.eval_batches,
            problem.train_batches, problem.score, type(problem.model)]


def run_fingerprint(method: str, problem: MergeProblem, eval_problem: MergeProblem | None = None) -> dict:
    """:func:`code_fingerprint` of a run: the method's code, its problem's and evaluation problem's, and the scoring."""
    eval_problem = eval_problem or problem
    roots = [get_method(method).run, final_scores, *problem_code(problem)]
    if eval_problem is not problem:
        roots += problem_code(eval_problem)
    return code_fingerprint(roots)


def run_key(method: str, params: Mapping[str, Any], tasks: Sequence[str], context: Mapping[str, Any]) -> str:
    """Hash of everything that changes a run's result (non-semantic params such as progress excluded).

    ``context`` carries the problem's identity and, from :func:`run_cached`, the code fingerprint.
    """
    semantic = {k: v for k, v in params.items() if k not in NON_SEMANTIC}
    blob = json.dumps({"method": method, "params": _jsonable(semantic), "tasks": list(tasks),
                       "context": _jsonable(dict(context))}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_cached(problem: MergeProblem, method: str, params: Mapping[str, Any], *, cache_dir: str | Path,
               eval_problem: MergeProblem | None = None, context: Mapping[str, Any] | None = None,
               force: bool = False, verbose: bool = True) -> RunRecord:
    """Run a registry method (or reuse the cached run with the same key); evaluate on ``eval_problem``'s tasks.

    Saved per run: record.json (scores, history, params, extras, seconds) and tensors (mask logits,
    coefficients) as safetensors. Test-time methods checkpoint into the run's folder, so a killed run resumes.
    """
    from safetensors.torch import save_file

    eval_problem = eval_problem or problem
    fingerprint = run_fingerprint(method, problem, eval_problem)
    context = {**problem_identity(problem), **(context or {}), "eval_tasks": list(eval_problem.task_names),
               "code": fingerprint["sha256"]}
    key = run_key(method, params, problem.task_names, context)
    directory = Path(cache_dir) / f"{method}-{key}"
    record_path = directory / "record.json"
    if record_path.exists() and not force:
        saved = json.loads(record_path.read_text())
        record = RunRecord(key, method, tuple(saved["tasks"]), saved["params"], saved["scores"], saved["history"],
                           saved["extras"], saved["seconds"], directory, cached=True, code=fingerprint["sha256"],
                           context=saved.get("context", {}), computed_at=saved.get("computed_at", ""))
        if verbose:
            print(f"{method}: cached run {key} (avg {record.average:.1f}, {record.seconds:.0f} s when computed)")
        return record
    run_params = dict(params)
    if "checkpoint_dir" in get_method(method).defaults:
        run_params["checkpoint_dir"] = str(directory / "checkpoint")
    started = time.perf_counter()
    result = run_method(method, problem, **run_params)
    scores = final_scores(result, problem, eval_problem)
    seconds = time.perf_counter() - started
    computed_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in result.extras.items() if isinstance(v, Tensor)}
    extras = {k: _jsonable(v) for k, v in result.extras.items() if not isinstance(v, Tensor)}
    directory.mkdir(parents=True, exist_ok=True)
    for name, tensor in tensors.items():
        tmp = directory / f".{name}.tmp.safetensors"
        save_file({name: tensor}, str(tmp))
        os.replace(tmp, directory / f"{name}.safetensors")
    atomic_write_json(record_path, {"method": method, "key": key, "tasks": list(problem.task_names),
                                    "params": _jsonable(result.params), "context": _jsonable(context), "scores": scores,
                                    "history": _jsonable(result.history), "extras": extras,
                                    "tensors": sorted(tensors), "seconds": round(seconds, 2),
                                    "computed_at": computed_at, "code": fingerprint, "environment": lock_info()})
    shutil.rmtree(directory / "checkpoint", ignore_errors=True)  # finished: the record replaces the checkpoint
    if verbose:
        print(f"{method}: avg {average(scores):.1f} in {seconds:.0f} s (run {key})")
    return RunRecord(key, method, tuple(problem.task_names), _jsonable(result.params), scores,
                     _jsonable(result.history), extras, seconds, directory, code=fingerprint["sha256"],
                     context=_jsonable(context), computed_at=computed_at)


def final_scores(result, problem: MergeProblem, eval_problem: MergeProblem) -> dict[str, float]:
    """Scores of a run's final state on ``eval_problem``'s tasks (the last logged evaluation when it is that one)."""
    last = result.history[-1] if result.history else {}
    if eval_problem is problem and "avg_accuracy" in last:  # the run's last logged evaluation IS the final state's
        return {t: float(last[f"acc/{t}"]) for t in problem.task_names}
    return evaluate(eval_problem, result.state)


def cached_table(cache_dir: str | Path, name: str, context: Mapping[str, Any], compute) -> pd.DataFrame:
    """``compute()`` once per (name, context, code of ``compute``); later calls read the saved CSV (evaluations
    shared across notebooks)."""
    context = {**context, "code": code_fingerprint([compute])["sha256"]}
    path = Path(cache_dir) / f"{name}-{run_key(name, {}, [], context)}.csv"
    if path.exists():
        return pd.read_csv(path)
    frame = compute()
    atomic_write_bytes(path, frame.to_csv(index=False).encode())
    return frame


def reference_rows(problem: MergeProblem, *, cache_dir: str | Path, context: Mapping[str, Any] | None = None,
                   verbose: bool = True) -> dict[str, dict[str, float]]:
    """Zero-shot (θ0 on every task) and individual (θ_i on task i) scores, cached like runs."""
    context = {**problem_identity(problem), **(context or {}),
               "code": code_fingerprint([reference_rows, *problem_code(problem)])["sha256"]}
    key = run_key("_reference_rows", {}, problem.task_names, context)
    path = Path(cache_dir) / f"reference_rows-{key}.json"
    if path.exists():
        return json.loads(path.read_text())["scores"]
    started = time.perf_counter()
    zero_shot = evaluate(problem)
    individual = {}
    for task in problem.task_names:
        state = problem.load_finetuned(task)
        individual.update(evaluate(problem, {k: state[k] for k in problem.pretrained}, tasks=[task]))
        del state
    scores = {"zero_shot": zero_shot, "individual": individual}
    atomic_write_json(path, {"scores": scores, "context": _jsonable(context), "seconds": time.perf_counter() - started})
    if verbose:
        print(f"zero-shot avg {average(zero_shot):.1f}, individual avg {average(individual):.1f}")
    return scores


# ================================================================================================ tables
def tidy_scores(method: str, scores: Mapping[str, float], **columns: Any) -> pd.DataFrame:
    """Long rows (method, task, accuracy, **columns) for one method, including the task 'average'."""
    rows = [{"method": method, "task": t, "accuracy": float(s), **columns} for t, s in scores.items()]
    rows.append({"method": method, "task": "average", "accuracy": float(average(scores)), **columns})
    return pd.DataFrame(rows)


def wide(table: pd.DataFrame, index: str | list[str] = "method", columns: str = "task",
         values: str = "accuracy") -> pd.DataFrame:
    """Pivot a tidy table to methods x tasks (task order and row order as first seen; 'average' last)."""
    index_cols = [index] if isinstance(index, str) else list(index)
    order = list(dict.fromkeys(table[columns]))
    if "average" in order:
        order = [c for c in order if c != "average"] + ["average"]
    rows = list(dict.fromkeys(map(tuple, table[index_cols].itertuples(index=False))))
    out = table.pivot_table(index=index_cols, columns=columns, values=values, aggfunc="first")
    out = out.reindex(pd.MultiIndex.from_tuples(rows, names=index_cols) if len(index_cols) > 1 else [r[0] for r in rows])
    out.columns.name = None
    return out[order]


def to_markdown(frame: pd.DataFrame, floatfmt: str = ".1f") -> str:
    """A GitHub Markdown table (no tabulate dependency); index included when it is named."""
    df = frame.reset_index() if any(n is not None for n in frame.index.names) else frame
    def cell(v):
        if isinstance(v, float):
            return "" if pd.isna(v) else format(v, floatfmt)
        if isinstance(v, bool):
            return "yes" if v else "no"
        return str(v)
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) and df[c].dtype != bool else "---"
                          for c in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def pretty(method: str) -> str:
    """The registry's pretty name for a method ('Zero-shot' / 'Individual' for the reference rows)."""
    special = {"zero_shot": "Zero-shot (pre-trained)", "individual": "Individual (fine-tuned)"}
    return special.get(method, METHODS[method].pretty_name if method in METHODS else method)


# ================================================================================================ outputs
def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that change results."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("concrete_subspace", "torch", "transformers", "numpy", "pandas", "matplotlib", "seaborn"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_info(device: str) -> dict[str, Any]:
    """The device a run used, in words (GPU name when CUDA), the CPU thread count, model and kernel path."""
    info: dict[str, Any] = {"device": device, "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
                            **kernel_info()}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def models_info(config: BaseConfig) -> dict[str, Any]:
    """Which models the results came from: the mini zoo's directory and manifest stamp, or the paper scale's arch."""
    if config.scale != "mini":
        return {"scale": "paper", "arch": getattr(config, "arch", None), "model": getattr(config, "model", None),
                "checkpoints": getattr(config, "checkpoints", None)}
    if isinstance(config, FlanT5Config):  # notebook 02 at mini scale runs on the mini-text zoo (always seed 0)
        from .text_zoo import default_text_zoo_dir

        directory = default_text_zoo_dir(0, config.smoke)
    else:
        from .zoo import default_zoo_dir

        directory = default_zoo_dir(config.seed, config.smoke)
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        return {"scale": "mini", "zoo_dir": str(directory), "manifest": "missing"}
    manifest = json.loads(manifest_path.read_text())
    return {"scale": "mini", "zoo_dir": str(directory), "zoo_created": manifest.get("created"),
            "zoo_format_version": manifest.get("format_version"), "zoo_seed": manifest.get("seed"),
            "zoo_smoke": manifest.get("smoke"), "zoo_accuracy_test": manifest.get("accuracy", {}).get("test")}


def check_runs_match_models(runs: Sequence[RunRecord], models: Mapping[str, Any]) -> None:
    """Every run must come from the zoo the results file names (same build stamp): refuse a mixed table."""
    created = models.get("zoo_created")
    for record in runs:
        ran_on = record.context.get("zoo_created")
        if created is not None and ran_on is not None and ran_on != created:
            raise ValueError(f"run {record.method} ({record.key}) was computed on the zoo built {ran_on}, but the "
                             f"results file names the zoo built {created} ({models.get('zoo_dir')}); rerun it")


def write_outputs(config: BaseConfig, name: str, tables: Mapping[str, pd.DataFrame], *, started: float,
                  runs: Iterable[RunRecord] = (), extra: Mapping[str, Any] | None = None) -> Path:
    """Save each table as CSV + Markdown and the results JSON (config, seed, versions, device, wall time, runs)."""
    directory = out_dir(config, name)
    directory.mkdir(parents=True, exist_ok=True)
    for table_name, frame in tables.items():
        atomic_write_bytes(directory / f"{table_name}.csv", frame.to_csv(index=False, float_format="%.4g").encode())
        atomic_write_bytes(directory / f"{table_name}.md", to_markdown(frame).encode())
    runs = list(runs)
    models = models_info(config)
    check_runs_match_models(runs, models)
    payload = {
        "experiment": name, "config": _jsonable(dataclasses.asdict(config)), "seed": config.seed,
        "scale": config.scale, "smoke": config.smoke, "versions": package_versions(), "environment": lock_info(),
        "device": device_info(config.device), "wall_seconds": round(time.perf_counter() - started, 1),
        "runs_reused": sum(r.cached for r in runs), "runs_computed": sum(not r.cached for r in runs),
        "runs": [{"method": r.method, "key": r.key, "tasks": list(r.tasks), "params": r.params,
                  "seconds": round(r.seconds, 1), "cached": r.cached, "code": r.code,
                  "computed_at": r.computed_at, "average": round(r.average, 3)} for r in runs],
        "tables": {k: f"{k}.csv" for k in tables}, "models": models, **_jsonable(dict(extra or {})),
    }
    atomic_write_json(directory / "results.json", payload)
    return directory


# ================================================================================================ runners
def _cache(config: BaseConfig) -> Path:
    path = cache_root(config)
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_methods(problem: MergeProblem, methods: Sequence[str], config: BaseConfig, *,
                eval_problem: MergeProblem | None = None, context: Mapping[str, Any] | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, RunRecord]:
    """Run (or reuse) each method with :func:`method_params` for the config's scale/steps/smoke."""
    records = {}
    for name in methods:
        params = method_params(name, scale=config.scale, steps=config.steps, smoke=config.smoke,
                               overrides=(overrides or {}).get(name), precision=config.precision)
        records[name] = run_cached(problem, name, params, cache_dir=_cache(config), eval_problem=eval_problem,
                                   context=context)
    return records


def run_multitask(config: MultitaskConfig) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """Table 1/2: zero-shot, individual and every method on all tasks. Tidy rows: method, task, accuracy."""
    problem = problem_for(config)
    methods = config.methods or tuple(METHODS)
    rows = reference_rows(problem, cache_dir=_cache(config))
    records = run_methods(problem, methods, config)
    table = pd.concat([tidy_scores("zero_shot", rows["zero_shot"]), tidy_scores("individual", rows["individual"])]
                      + [tidy_scores(m, r.scores) for m, r in records.items()], ignore_index=True)
    return table, records


def text_method_params(name: str, config: FlanT5Config, seed: int) -> dict[str, Any]:
    """Parameters of ``name`` on the mini-text zoo: registry <- text_zoo.TEXT_DEFAULTS <- steps/smoke <- run seed.

    Test-time methods evaluate once, at the end (each evaluation costs several steps on this CPU).
    """
    from .text_zoo import TEXT_DEFAULTS, TEXT_FALLBACK_STEPS

    defaults = get_method(name).defaults
    overrides = dict(TEXT_DEFAULTS.get(name, {}))
    for key in STEP_KEYS:
        if key not in defaults:
            continue
        if config.steps is not None or config.smoke:
            overrides.pop(key, None)
        else:
            overrides.setdefault(key, TEXT_FALLBACK_STEPS[key])
    if "seed" in defaults:
        overrides["seed"] = seed
    if "eval_every" in defaults:
        steps = [overrides.get(k, config.steps if config.steps is not None else SMOKE_STEPS) for k in STEP_KEYS if k in defaults]
        overrides["eval_every"] = max(1, max(steps))
    return method_params(name, scale="mini-text", steps=config.steps, smoke=config.smoke, overrides=overrides)


def text_problem(config: FlanT5Config, seed: int, split: str = "test") -> MergeProblem:
    """The mini-text problem whose test-time batches are ordered by ``seed`` (the zoo itself is always seed 0)."""
    return load_problem("mini-text", config.tasks, config.device, split, seed, config.smoke)


def lambda_sweep(problem: MergeProblem, scalings: Sequence[float]) -> pd.DataFrame:
    """Task arithmetic at each λ: accuracy and mean softmax entropy (of the task's own head) per task."""
    from .text_zoo import task_logits_on

    vectors = [task_vector(problem.pretrained, problem.load_finetuned(t)) for t in problem.task_names]
    rows = []
    for scaling in scalings:
        state = task_arithmetic(problem.pretrained, vectors, float(scaling))
        for task in problem.task_names:
            logits, labels = task_logits_on(problem, state, task)
            logp = logits.log_softmax(-1)
            rows.append({"scaling": float(scaling), "task": task,
                         "accuracy": 100.0 * float((logits.argmax(-1) == labels).float().mean()),
                         "entropy": float(-(logp.exp() * logp).sum(-1).mean())})
    table = pd.DataFrame(rows)
    averages = table.groupby("scaling", sort=False)[["accuracy", "entropy"]].mean().reset_index().assign(task="average")
    return pd.concat([table, averages], ignore_index=True)


def run_text_tables(config: FlanT5Config) -> tuple[dict[str, pd.DataFrame], dict[str, RunRecord]]:
    """Mini scale of notebook 02: every method on the mini-text zoo; test-time methods once per seed; the λ sweep."""
    cache = _cache(config)
    seeds = tuple(config.seeds or (config.seed,))
    base = text_problem(config, seeds[0])
    rows = reference_rows(base, cache_dir=cache)
    frames = [tidy_scores("zero_shot", rows["zero_shot"], seed=seeds[0]),
              tidy_scores("individual", rows["individual"], seed=seeds[0])]
    records: dict[str, RunRecord] = {}
    for seed in seeds:
        problem = base if seed == seeds[0] else text_problem(config, seed)
        for name in config.methods or tuple(METHODS):
            test_time = any(k in get_method(name).defaults for k in STEP_KEYS)
            if seed != seeds[0] and not test_time:
                continue  # data-free methods do not depend on the seed
            record = run_cached(problem, name, text_method_params(name, config, seed), cache_dir=cache)
            records[name if seed == seeds[0] else f"{name}@seed{seed}"] = record
            frames.append(tidy_scores(name, record.scores, seed=seed))
    scalings = tuple(float(x) for x in (config.ta_scalings or ()))
    sweep = cached_table(cache, "text_lambda_sweep", {**problem_identity(base), "scalings": scalings},
                         lambda: lambda_sweep(base, scalings)) if scalings else pd.DataFrame()
    return {"runs": pd.concat(frames, ignore_index=True), "lambda_sweep": sweep}, records


def seed_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean, std, min and max over seeds of the task-average accuracy, and the number of seeds."""
    avg = runs[runs["task"] == "average"]
    out = avg.groupby("method", sort=False)["accuracy"].agg(["mean", "std", "min", "max", "count"]).reset_index()
    return out.rename(columns={"count": "seeds"}).fillna({"std": 0.0})


def run_flan_t5(config: FlanT5Config) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """Table 3: Flan-T5 + LoRA-16 on GLUE (paper; STS-B: Spearman x 100), or at scale mini the mini-text zoo.

    At mini scale the table is the mean over ``config.seeds`` (test-time methods; data-free ones have one run);
    :func:`run_text_tables` also returns the per-seed rows and the λ sweep.
    """
    if config.scale == "mini":
        tables, records = run_text_tables(config)
        runs = tables["runs"]
        table = runs.groupby(["method", "task"], sort=False)["accuracy"].mean().reset_index()
        return table, records
    problem = load_problem("paper", config.tasks, config.device, "test", config.seed, False, arch="flan-t5",
                           model=config.model, limit=config.limit)
    rows = reference_rows(problem, cache_dir=_cache(config))
    records = run_methods(problem, config.methods or tuple(METHODS), config)
    table = pd.concat([tidy_scores("zero_shot", rows["zero_shot"]), tidy_scores("individual", rows["individual"])]
                      + [tidy_scores(m, r.scores) for m, r in records.items()], ignore_index=True)
    return table, records


def generalization_splits(config: BaseConfig) -> dict[str, tuple[str, ...]]:
    """Unseen tasks of each split (the paper's two splits, or their mini-zoo analogues)."""
    return dict(PAPER_GENERALIZATION_SPLITS if config.scale == "paper" else MINI_GENERALIZATION_SPLITS)


def run_generalization(config: GeneralizationConfig) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """Table: merge the 6 seen tasks, score on seen and unseen tasks. Rows: split, method, task, seen, accuracy."""
    full = problem_for(config)
    frames, records = [], {}
    for split, unseen in generalization_splits(config).items():
        missing = [t for t in unseen if t not in full.task_names]
        if missing:
            raise KeyError(f"generalization split {split}: unseen task(s) {missing} are not among the loaded tasks")
        seen = tuple(t for t in full.task_names if t not in unseen)
        problem = restrict(full, seen)
        runs = run_methods(problem, config.methods, config, eval_problem=full, context={"experiment": "generalization"})
        for method, record in runs.items():
            records[f"{split}/{method}"] = record
            for task, score in record.scores.items():
                frames.append({"split": split, "method": method, "task": task, "seen": task in seen, "accuracy": score})
    table = pd.DataFrame(frames)
    return table, records


def generalization_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Average over seen and over unseen tasks per split and method (the paper's table layout)."""
    out = table.groupby(["split", "method", "seen"], sort=False)["accuracy"].mean().unstack("seen")
    out = out.rename(columns={True: "avg_seen", False: "avg_unseen"})[["avg_seen", "avg_unseen"]].reset_index()
    return out


def corrupted_problem(problem: MergeProblem, corruption: str, severity: int, seed: int, zoo_dir: str | Path) -> MergeProblem:
    """The mini problem with every test image corrupted (fixed per image, batch-wise generator from the seed)."""
    from .data.batching import step_indices
    from .data.corruptions import corrupt
    from .zoo import load_task_split

    pixels, labels = {}, {}
    for i, task in enumerate(problem.task_names):
        images, y = load_task_split(zoo_dir, task, problem.info.get("split", "test"))
        x = images.permute(0, 3, 1, 2).float() / 255.0
        if corruption != "clean":
            x = corrupt(x, corruption, severity, generator=torch.Generator().manual_seed(seed * 1_000_003 + i))
        pixels[task] = ((x.clamp(0, 1) - 0.5) / 0.5).to(problem.device)
        labels[task] = y

    def unlabeled_batch(task: str, step: int) -> Tensor:
        return pixels[task][step_indices(len(labels[task]), 16, step, seed)]

    def eval_batches(task: str):
        for start in range(0, len(labels[task]), 256):
            yield pixels[task][start:start + 256], labels[task][start:start + 256]

    info = {**problem.info, "variant": f"{corruption}-s{severity}"}
    return dataclasses.replace(problem, unlabeled_batch=unlabeled_batch, eval_batches=eval_batches, info=info)


def corruption_names(config: RobustnessConfig) -> tuple[str, ...]:
    """'clean' plus the configured corruptions (default: all seven of the paper)."""
    from .data.corruptions import CORRUPTIONS

    return ("clean",) + tuple(config.corruptions or CORRUPTIONS)


def run_robustness(config: RobustnessConfig) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """Robustness table: per corruption, each method adapts on and is scored on the corrupted test images."""
    tasks = config.tasks or (PAPER_ROBUSTNESS_TASKS if config.scale == "paper" else MINI_ROBUSTNESS_TASKS)
    if config.scale == "paper":
        return _run_robustness_paper(config, tasks)
    clean = problem_for(config, tasks=tasks)
    zoo_dir = clean.info["zoo_dir"]
    if config.steps is None and not config.smoke:
        config = dataclasses.replace(config, steps=MINI_ROBUSTNESS_STEPS)
    rows, records = [], {}
    for corruption in corruption_names(config):
        problem = corrupted_problem(clean, corruption, config.severity, config.seed, zoo_dir)
        ref = reference_rows(problem, cache_dir=_cache(config))
        for method in ("zero_shot", "individual"):
            rows += [{"corruption": corruption, "method": method, "task": t, "accuracy": s} for t, s in ref[method].items()]
        runs = run_methods(problem, config.methods, config, context={"experiment": "robustness"})
        for method, record in runs.items():
            records[f"{corruption}/{method}"] = record
            rows += [{"corruption": corruption, "method": method, "task": t, "accuracy": s} for t, s in record.scores.items()]
    table = pd.DataFrame(rows)
    averages = table.groupby(["corruption", "method"], sort=False)["accuracy"].mean().reset_index().assign(task="average")
    return pd.concat([table, averages], ignore_index=True), records


def _run_robustness_paper(config: RobustnessConfig, tasks: Sequence[str]):
    """Paper scale: Hub CLIP (or the task_vectors checkpoints) with each test set corrupted after resize/crop."""
    from .data.corruptions import corruption_transform
    from .data.paper import clip_image_transform, load_vision_test_set
    from .models.clip_hub import build_clip_hub_problem
    from .models.open_clip_ckpt import build_open_clip_problem

    rows, records = [], {}
    for corruption in corruption_names(config):
        corrupt_fn = None if corruption == "clean" else corruption_transform(corruption, config.severity, config.seed)
        if config.checkpoints is not None:  # test sets at the open_clip model's resolution, corrupted the same way
            problem = build_open_clip_problem(config.checkpoints, config.arch, tasks, device=config.device,
                                              seed=config.seed, corruption=corrupt_fn)
        else:
            transform = clip_image_transform(224, corruption=corrupt_fn)
            test_sets = {t: load_vision_test_set(t, transform=transform) for t in tasks}
            problem = build_clip_hub_problem(config.arch, tasks, device=config.device, seed=config.seed,
                                             test_sets=test_sets)
        problem = dataclasses.replace(problem, info={**problem.info, "variant": f"{corruption}-s{config.severity}"})
        runs = run_methods(problem, config.methods, config, context={"experiment": "robustness"})
        for method, record in runs.items():
            records[f"{corruption}/{method}"] = record
            rows += [{"corruption": corruption, "method": method, "task": t, "accuracy": s} for t, s in record.scores.items()]
    table = pd.DataFrame(rows)
    averages = table.groupby(["corruption", "method"], sort=False)["accuracy"].mean().reset_index().assign(task="average")
    return pd.concat([table, averages], ignore_index=True), records


def curves_table(records: Mapping[str, RunRecord]) -> pd.DataFrame:
    """Accuracy over steps from the runs' histories: method, stage (tta|meta), step, task, accuracy."""
    rows = []
    for method, record in records.items():
        for row in record.history:
            if "avg_accuracy" not in row:
                continue
            stage = row.get("stage", "tta")
            stage = "concrete" if stage == "concrete_task_arithmetic" else stage
            rows.append({"method": method, "stage": stage, "step": row["step"], "task": "average", "accuracy": row["avg_accuracy"]})
            rows += [{"method": method, "stage": stage, "step": row["step"], "task": k.removeprefix("acc/"), "accuracy": v}
                     for k, v in row.items() if k.startswith("acc/")]
    return pd.DataFrame(rows, columns=["method", "stage", "step", "task", "accuracy"])


def run_curves(config: CurvesConfig) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """Accuracy curves of the test-time methods (reusing the table's cached runs: same parameters, same key)."""
    problem = problem_for(config)
    records = run_methods(problem, config.methods, config)
    return curves_table(records), records


def mask_density_table(records: Mapping[str, RunRecord]) -> pd.DataFrame:
    """Per merged tensor: method, tensor, layer (block index or 'other'), density (σ(x) > 0.5), mean keep probability."""
    rows = []
    for method, record in records.items():
        per_tensor = record.extras.get("mask_density", {}).get("per_tensor", {})
        for i, (key, stats) in enumerate(per_tensor.items()):
            rows.append({"method": method, "tensor": key, "index": i, "layer": layer_of(key),
                         "kind": "weight" if key.endswith("weight") else "bias", **stats})
    return pd.DataFrame(rows)


#: Names of the per-block containers (HF CLIP: encoder.layers.N, open_clip: transformer.resblocks.N) and of the
#: open_clip stem tensors that HF CLIP keeps under 'embeddings'.
BLOCK_CONTAINERS = ("layers", "resblocks")
OPEN_CLIP_STEM = ("conv1", "class_embedding", "positional_embedding", "ln_pre")


def layer_of(key: str) -> str:
    """'vision_model.encoder.layers.3.mlp.fc1.weight' (or open_clip's '...resblocks.3...') -> 'layer 3';
    embeddings (open_clip: conv1, class/positional embedding, ln_pre) -> 'embeddings'; final norms -> their module."""
    parts = key.split(".")
    for container in BLOCK_CONTAINERS:
        if container in parts[:-1]:
            return f"layer {parts[parts.index(container) + 1]}"
    if "embeddings" in parts or any(p in OPEN_CLIP_STEM for p in parts):
        return "embeddings"
    if len(parts) == 2 and parts[0] == "vision_model":  # open_clip's projection 'vision_model.proj'
        return parts[1]
    return parts[-2] if len(parts) > 1 else key


def mask_of(record: RunRecord, problem: MergeProblem, kind: str | None = None) -> dict[str, Tensor]:
    """The exact (unrescaled) mask the run's final model used, as a state dict; verified against its digest.

    Redrawn from the saved logits with the kind, generator seed and temperature the run recorded
    (``extras["eval_mask"]``). ``kind`` draws another kind of evaluation mask with the same generator seed instead
    (e.g. 'hard' for the evaluation-mask ablation).
    """
    from .concrete import mask_digest
    from .task_vectors import ParamLayout

    spec = record.extras.get("eval_mask")
    if not isinstance(spec, dict):
        raise ValueError(f"run {record.method} ({record.key}) recorded no evaluation mask (extras['eval_mask']); "
                         "only the Concrete methods have one")
    logits = record.tensor("mask_logits").to(problem.device)
    layout = ParamLayout.of(problem.pretrained)
    if layout.num_params != logits.numel():
        raise ValueError(f"run {record.method} ({record.key}): {logits.numel()} mask logits but the problem merges "
                         f"{layout.num_params} parameters (another model?)")
    chosen = spec["kind"] if kind is None else kind
    generator = torch.Generator(device=logits.device).manual_seed(spec["seed"])
    mask = evaluation_mask(logits, chosen, temperature=spec["temperature"], generator=generator)
    if chosen == spec["kind"] and mask_digest(mask) != spec["sha256"]:
        raise ValueError(f"run {record.method} ({record.key}): the redrawn {chosen!r} mask differs from the one its "
                         f"final model used (drawn on {spec['device']}, redrawn on {logits.device}); analyse it on "
                         f"the device it ran on")
    return layout.unflatten(mask)


def masked_individual_table(problem: MergeProblem, records: Mapping[str, RunRecord]) -> pd.DataFrame:
    """Each task's fine-tuned model with the learned mask applied to its own task vector (θ0 + τ_i ⊙ m/mean m)."""
    rows = []
    masks = {m: mask_of(r, problem) for m, r in records.items()}
    for task in problem.task_names:
        vector = task_vector(problem.pretrained, problem.load_finetuned(task))
        full = {k: problem.pretrained[k] + vector[k] for k in vector}
        rows.append({"model": "individual", "task": task, "accuracy": evaluate(problem, full, tasks=[task])[task]})
        for method, mask in masks.items():
            state = masked_merge(problem.pretrained, [vector], [1.0], mask)
            rows.append({"model": f"masked by {pretty(method)}", "task": task, "accuracy": evaluate(problem, state, tasks=[task])[task]})
    table = pd.DataFrame(rows)
    averages = table.groupby("model", sort=False)["accuracy"].mean().reset_index().assign(task="average")
    return pd.concat([table, averages], ignore_index=True)


def masked_individuals(config: BaseConfig, problem: MergeProblem, records: Mapping[str, RunRecord]) -> pd.DataFrame:
    """:func:`masked_individual_table`, cached by the runs' keys."""
    context = {**problem_identity(problem), "runs": {m: r.key for m, r in records.items()}}
    return cached_table(_cache(config), "masked_individual", context, lambda: masked_individual_table(problem, records))


def eval_mask_table(problem: MergeProblem, record: RunRecord, kinds: Sequence[str]) -> pd.DataFrame:
    """A Concrete TA run's learned mask evaluated with each kind of evaluation mask (no re-training)."""
    vectors = list(stream_task_vectors(problem))
    scaling = record.params["scaling"]
    rows = []
    for kind in kinds:
        state = masked_merge(problem.pretrained, vectors, [scaling] * len(vectors), mask_of(record, problem, kind))
        rows.append(tidy_scores("concrete_task_arithmetic", evaluate(problem, state), eval_mask=kind))
    return pd.concat(rows, ignore_index=True)


def run_ablations(config: AblationConfig) -> tuple[dict[str, pd.DataFrame], dict[str, RunRecord]]:
    """Temperature, steps, λ_TA, evaluation mask and number of tasks, all for Concrete TA (TA beside it)."""
    problem = problem_for(config)
    cache = _cache(config)
    base = method_params("concrete_task_arithmetic", scale=config.scale, steps=config.steps, smoke=config.smoke,
                         precision=config.precision)
    records: dict[str, RunRecord] = {}
    tables: dict[str, pd.DataFrame] = {}

    def cta(overrides: Mapping[str, Any], target: MergeProblem = problem) -> RunRecord:
        return run_cached(target, "concrete_task_arithmetic", {**base, **overrides}, cache_dir=cache)

    frames = []
    for temperature in config.temperatures or ():
        record = records[f"temperature={temperature}"] = cta({"temperature": float(temperature)})
        frames.append(tidy_scores("concrete_task_arithmetic", record.scores, temperature=float(temperature)))
    tables["temperature"] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    default_run = records.get(f"temperature={base.get('temperature', 0.5)}") or cta({})
    records["default"] = default_run
    steps = curves_table({"concrete_task_arithmetic": default_run})
    tables["steps"] = steps

    frames = []
    for scaling in config.ta_scalings or ():
        record = run_cached(problem, "task_arithmetic", {"scaling": float(scaling)}, cache_dir=cache, verbose=False)
        frames.append(tidy_scores("task_arithmetic", record.scores, scaling=float(scaling)))
    for scaling in config.scalings or ():
        record = records[f"scaling={scaling}"] = cta({"scaling": float(scaling)})
        frames.append(tidy_scores("concrete_task_arithmetic", record.scores, scaling=float(scaling)))
    tables["scaling"] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    kinds = tuple(config.eval_masks or ())
    tables["eval_mask"] = cached_table(cache, "eval_mask", {**problem_identity(problem), "run": default_run.key, "kinds": kinds},
                                       lambda: eval_mask_table(problem, default_run, kinds))

    frames = []
    for count in config.task_counts or ():
        count = int(count)
        if not 1 <= count <= len(problem.task_names):
            raise ValueError(f"task_counts: {count} is outside 1..{len(problem.task_names)}")
        subset = restrict(problem, problem.task_names[:count])
        ta = run_cached(subset, "task_arithmetic", method_params("task_arithmetic", scale=config.scale), cache_dir=cache,
                        verbose=False)
        frames.append(tidy_scores("task_arithmetic", ta.scores, num_tasks=count))
        record = records[f"num_tasks={count}"] = default_run if count == len(problem.task_names) else cta({}, subset)
        frames.append(tidy_scores("concrete_task_arithmetic", record.scores, num_tasks=count))
    tables["num_tasks"] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return tables, records


# ================================================================================================ claims
@dataclass(frozen=True)
class Claim:
    """A qualitative claim of the paper, checked on our numbers: 'a' beats 'b' on average accuracy."""

    text: str
    better: str
    worse: str


MULTITASK_CLAIMS = (
    Claim("Merging interferes: Task Arithmetic is below the individual models", "individual", "task_arithmetic"),
    Claim("Concrete TA beats Task Arithmetic", "concrete_task_arithmetic", "task_arithmetic"),
    Claim("Task-wise Concrete AdaMerging beats task-wise AdaMerging", "task_wise_concrete_adamerging", "task_wise_adamerging"),
    Claim("Layer-wise Concrete AdaMerging beats layer-wise AdaMerging", "layer_wise_concrete_adamerging", "layer_wise_adamerging"),
    Claim("TIES-Merging beats Task Arithmetic", "ties_merging", "task_arithmetic"),
    Claim("Layer-wise AdaMerging beats task-wise AdaMerging", "layer_wise_adamerging", "task_wise_adamerging"),
    Claim("Task Arithmetic beats the zero-shot model", "task_arithmetic", "zero_shot"),
)


def check_claims(averages: Mapping[str, float], claims: Sequence[Claim], margin: float = 0.0) -> pd.DataFrame:
    """For each claim whose methods were run: both averages, their difference and whether the claim holds."""
    rows = []
    for claim in claims:
        if claim.better not in averages or claim.worse not in averages:
            continue
        a, b = averages[claim.better], averages[claim.worse]
        rows.append({"claim": claim.text, claim_col("better"): a, claim_col("worse"): b, "difference": a - b,
                     "holds": bool(a - b > margin)})
    return pd.DataFrame(rows, columns=["claim", claim_col("better"), claim_col("worse"), "difference", "holds"])


def claim_col(which: str) -> str:
    return {"better": "avg (claimed better)", "worse": "avg (claimed worse)"}[which]


def best_method_claim(averages: Mapping[str, float], expected: str = "layer_wise_concrete_adamerging") -> pd.DataFrame:
    """Is ``expected`` the best merge (highest average among merged models, i.e. excluding individual/zero-shot)?"""
    merged = {m: v for m, v in averages.items() if m not in ("individual", "zero_shot")}
    if expected not in merged:
        return pd.DataFrame(columns=["claim", "best method", "best avg", "holds"])
    best = max(merged, key=merged.get)
    return pd.DataFrame([{"claim": f"{pretty(expected)} is the best merging method", "best method": best,
                          "best avg": merged[best], "holds": best == expected}])


def averages_of(table: pd.DataFrame, by: str = "method") -> dict[str, float]:
    """Average accuracy per method from a tidy table (its 'average' rows)."""
    rows = table[table["task"] == "average"]
    return dict(zip(rows[by], rows["accuracy"]))


# ================================================================================================ regression check
REGRESSION_METHODS = ("task_arithmetic", "ties_merging", "concrete_task_arithmetic", "layer_wise_adamerging",
                      "layer_wise_concrete_adamerging")


def regression_table(problem: MergeProblem, methods: Sequence[str] = REGRESSION_METHODS) -> pd.DataFrame:
    """A small table recomputed from scratch (never from the run cache), to compare with committed expectations.

    Rows (method, task, quantity, value): accuracy per task and average of the zero-shot, individual and each
    method's model at smoke size (:func:`method_params` with ``smoke=True``), plus each method's merged-weight
    L2 norm and, for test-time methods, the final step's summed entropy: continuous values that move with any
    numeric drift, where accuracy on a small test set moves in whole images.
    """
    rows = []

    def add(method: str, scores: Mapping[str, float]) -> None:
        rows.extend({"method": method, "task": t, "quantity": "accuracy", "value": float(s)} for t, s in scores.items())
        rows.append({"method": method, "task": "average", "quantity": "accuracy", "value": float(average(scores))})

    add("zero_shot", evaluate(problem))
    individual = {}
    for task in problem.task_names:
        state = problem.load_finetuned(task)
        individual.update(evaluate(problem, {k: state[k] for k in problem.pretrained}, tasks=[task]))
    add("individual", individual)
    for method in methods:
        result = run_method(method, problem, **method_params(method, smoke=True, overrides=_regression_overrides(method)))
        add(method, evaluate(problem, result.state))
        norm = torch.sqrt(sum(v.double().pow(2).sum() for v in result.state.values()))
        rows.append({"method": method, "task": "all", "quantity": "weight_norm", "value": float(norm)})
        losses = [row["loss"] for row in result.history if "loss" in row]
        if losses:
            rows.append({"method": method, "task": "all", "quantity": "final_loss", "value": float(losses[-1])})
    return pd.DataFrame(rows, columns=["method", "task", "quantity", "value"])


def _regression_overrides(method: str) -> dict[str, Any]:
    """No progress bar and no accuracy curve (the final state is scored once) for the regression runs."""
    defaults = get_method(method).defaults
    return {k: v for k, v in (("progress", False), ("eval_every", 0)) if k in defaults}


def compare_regression(actual: pd.DataFrame, expected: pd.DataFrame, tolerances: Mapping[str, tuple[float, float]]
                       ) -> list[str]:
    """Rows of ``actual`` outside (absolute, relative) ``tolerances[quantity]`` of ``expected``, or missing, as text."""
    keys = ["method", "task", "quantity"]
    merged = expected.merge(actual, on=keys, how="outer", suffixes=("_expected", "_actual"), indicator="presence")
    problems = []
    for row in merged.to_dict("records"):
        where = f"{row['method']}/{row['task']}/{row['quantity']}"
        if row["presence"] != "both":
            problems.append(f"{where}: {'missing now' if row['presence'] == 'left_only' else 'not in the expectations'}")
            continue
        absolute, relative = tolerances[row["quantity"]]
        allowed = absolute + relative * abs(row["value_expected"])
        if not abs(row["value_actual"] - row["value_expected"]) <= allowed:
            problems.append(f"{where}: {row['value_actual']:.6g} vs expected {row['value_expected']:.6g} "
                            f"(allowed ±{allowed:.3g})")
    return problems
