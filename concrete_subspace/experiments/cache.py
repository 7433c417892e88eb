"""The run cache: a merge run is computed once per key (everything that changes its result) and reused after.

The key hashes the scale, seed, smoke, zoo identity, data variant, tasks, method and its resolved parameters, and
a fingerprint of the code that computes it (the package source the method, the problem and the scoring reach, plus
the versions of the numeric packages; see :func:`provenance.code_fingerprint`): notebooks share runs, a change to
one method's code recomputes that method's runs only, and an interrupted run resumes from its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import Tensor

from ..checkpoint import atomic_path, atomic_write_bytes, atomic_write_json
from ..evaluation import average, evaluate
from ..loop import NON_SEMANTIC
from ..problem import MergeProblem
from ..provenance import code_fingerprint, lock_info
from ..registry import get_method, run_method
from .configs import BaseConfig, cache_root
from .problems import problem_identity

log = logging.getLogger(__name__)


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


def jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def problem_code(problem: MergeProblem) -> list:
    """The callables of a problem (data, heads, scoring, model class): their code changes what a run computes."""
    return [
        problem.load_finetuned,
        problem.task_logits,
        problem.unlabeled_batch,
        problem.eval_batches,
        problem.train_batches,
        problem.score,
        type(problem.model),
    ]


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
    blob = json.dumps(
        {"method": method, "params": jsonable(semantic), "tasks": list(tasks), "context": jsonable(dict(context))},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolved_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` over the registry defaults of ``method``: what the run computes with.

    The run cache keys on these, so spelling a default out (temperature=0.5, seed=0) names the same run and
    notebooks that reach one run by different routes compute it once.
    """
    return {**get_method(method).defaults, **params}


def run_cached(
    problem: MergeProblem,
    method: str,
    params: Mapping[str, Any],
    *,
    cache_dir: str | Path,
    eval_problem: MergeProblem | None = None,
    context: Mapping[str, Any] | None = None,
    force: bool = False,
    verbose: bool = True,
) -> RunRecord:
    """Run a registry method (or reuse the cached run with the same key); evaluate on ``eval_problem``'s tasks.

    Saved per run: record.json (scores, history, params, extras, seconds) and tensors (mask logits,
    coefficients) as safetensors. Test-time methods checkpoint into the run's folder, so a killed run resumes.
    """
    from safetensors.torch import save_file

    eval_problem = eval_problem or problem
    fingerprint = run_fingerprint(method, problem, eval_problem)
    context = {
        **problem_identity(problem),
        **(context or {}),
        "eval_tasks": list(eval_problem.task_names),
        "code": fingerprint["sha256"],
    }
    key = run_key(method, resolved_params(method, params), problem.task_names, context)
    directory = Path(cache_dir) / f"{method}-{key}"
    record_path = directory / "record.json"
    if record_path.exists() and not force:
        saved = json.loads(record_path.read_text())
        record = RunRecord(
            key,
            method,
            tuple(saved["tasks"]),
            saved["params"],
            saved["scores"],
            saved["history"],
            saved["extras"],
            saved["seconds"],
            directory,
            cached=True,
            code=fingerprint["sha256"],
            context=saved.get("context", {}),
            computed_at=saved.get("computed_at", ""),
        )
        if verbose:
            log.info(f"{method}: cached run {key} (avg {record.average:.1f}, {record.seconds:.0f} s when computed)")
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
    extras = {k: jsonable(v) for k, v in result.extras.items() if not isinstance(v, Tensor)}
    directory.mkdir(parents=True, exist_ok=True)
    for name, tensor in tensors.items():
        with atomic_path(directory / f"{name}.safetensors") as tmp:
            save_file({name: tensor}, str(tmp))
    atomic_write_json(
        record_path,
        {
            "method": method,
            "key": key,
            "tasks": list(problem.task_names),
            "params": jsonable(result.params),
            "context": jsonable(context),
            "scores": scores,
            "history": jsonable(result.history),
            "extras": extras,
            "tensors": sorted(tensors),
            "seconds": round(seconds, 2),
            "computed_at": computed_at,
            "code": fingerprint,
            "environment": lock_info(),
        },
    )
    shutil.rmtree(directory / "checkpoint", ignore_errors=True)  # finished: the record replaces the checkpoint
    if verbose:
        log.info(f"{method}: avg {average(scores):.1f} in {seconds:.0f} s (run {key})")
    return RunRecord(
        key,
        method,
        tuple(problem.task_names),
        jsonable(result.params),
        scores,
        jsonable(result.history),
        extras,
        seconds,
        directory,
        code=fingerprint["sha256"],
        context=jsonable(context),
        computed_at=computed_at,
    )


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


def reference_rows(
    problem: MergeProblem, *, cache_dir: str | Path, context: Mapping[str, Any] | None = None, verbose: bool = True
) -> dict[str, dict[str, float]]:
    """Zero-shot (θ0 on every task) and individual (θ_i on task i) scores, cached like runs."""
    context = {
        **problem_identity(problem),
        **(context or {}),
        "code": code_fingerprint([reference_rows, *problem_code(problem)])["sha256"],
    }
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
    atomic_write_json(path, {"scores": scores, "context": jsonable(context), "seconds": time.perf_counter() - started})
    if verbose:
        log.info(f"zero-shot avg {average(zero_shot):.1f}, individual avg {average(individual):.1f}")
    return scores


def cache_for(config: BaseConfig) -> Path:
    path = cache_root(config)
    path.mkdir(parents=True, exist_ok=True)
    return path
