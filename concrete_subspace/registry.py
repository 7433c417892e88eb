"""The registry of merge methods: one explicit list, one entry per method (name, function, defaults, reference).

``METHODS`` is built from :data:`ENTRIES` (no registration by import side effects, as mergekit's registry); each
entry's ``run(problem, **params) -> MergeResult`` is a method of :mod:`baselines`, :mod:`adamerging` or
:mod:`concrete`, or a data-free merge of :mod:`merging` wrapped here to read its task vectors from the problem.
Its defaults are the keyword defaults of ``run``. The methods import the primitives (:mod:`merging`,
:mod:`masks`, ...), never this module; only callers that pick a method by name (experiments, CLI) import it.

The registry's API is flat: a test-time method's entry takes its hyperparameters and the fields of
:class:`~concrete_subspace.loop.RunOptions` as keywords side by side (``steps=``, ``precision=``, ``seed=`` ...);
:func:`split_params` hands the method its hyperparameters and one ``run=RunOptions(...)``.
"""

from __future__ import annotations

import difflib
import inspect
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import adamerging, baselines, concrete
from .loop import RunOptions, run_option_names
from .merging import task_arithmetic, ties_merging, weight_averaging
from .problem import MergeProblem, MergeResult
from .task_vectors import check_finite, task_vector


@dataclass(frozen=True)
class MethodSpec:
    """One registry entry: ``run(problem, **params) -> MergeResult``; ``defaults`` are its keyword defaults."""

    name: str
    pretty_name: str
    reference: str
    run: Callable[..., MergeResult]
    needs_data: bool
    data_free: Callable[..., dict[str, Tensor]] | None = None  # (pretrained, task_vectors, **params) for the CLI

    @property
    def defaults(self) -> dict[str, Any]:
        sig = inspect.signature(self.run)
        return {
            n: p.default for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY and p.default is not p.empty
        }


class UnknownMethodError(KeyError):
    """Unknown method or parameter name; the message lists the valid names and the closest match."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def _closest(name: str, valid: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(valid), n=1)
    return f" Did you mean {match[0]!r}?" if match else ""


def get_method(name: str) -> MethodSpec:
    """The registry entry for ``name``, or an error listing the valid names."""
    if name not in METHODS:
        raise UnknownMethodError(
            f"unknown method {name!r}.{_closest(name, METHODS)} Valid methods: {', '.join(METHODS)}"
        )
    return METHODS[name]


def resolve_params(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's defaults updated with ``overrides``; unknown parameter names are an error naming the valid ones."""
    spec = get_method(name)
    params = spec.defaults
    for key, value in (overrides or {}).items():
        if key not in params:
            raise UnknownMethodError(
                f"unknown parameter {key!r} for method {name!r}.{_closest(key, params)} Valid parameters: {', '.join(params)}"
            )
        params[key] = value
    return params


def _type_matches(value: Any, default: Any) -> tuple[bool, str] | None:
    """(whether ``value`` has the kind of type ``default`` has, that kind's name); None if the default says nothing."""
    if isinstance(default, bool):
        return isinstance(value, (bool, np.bool_)), "bool"
    if isinstance(default, int):
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)), "int"
    if isinstance(default, float):
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)), "float"
    if isinstance(default, str):
        return isinstance(value, (str, torch.dtype)), "str"
    if isinstance(default, tuple):
        return isinstance(value, (tuple, list)) and len(value) == len(default), f"sequence of {len(default)}"
    return None


def check_param_type(method: str, key: str, value: Any, default: Any, annotation: str = "") -> None:
    """Refuse a value whose type contradicts the default's (e.g. the string "10" for steps, "False" for a flag).

    For a ``None`` default the annotation decides (``bool | None``, ``float | None``, ``int | None``); None passes.
    """
    reference = default
    if default is None:
        if value is None:
            return
        reference = next(
            (d for name, d in (("bool", False), ("float", 0.0), ("int", 0)) if name in str(annotation)), None
        )
    match = _type_matches(value, reference)
    if match is not None and not match[0]:
        raise TypeError(
            f"parameter {key!r} of method {method!r} must be {match[1]} (default {default!r}), "
            f"got {type(value).__name__} {value!r}"
        )


def run_method(name: str, problem: MergeProblem, **params: Any) -> MergeResult:
    """Run a registered method on a problem with its defaults overridden by ``params`` (types checked)."""
    resolved = resolve_params(name, params)
    defaults = get_method(name).defaults
    signature = inspect.signature(get_method(name).run).parameters
    for key in params:
        check_param_type(name, key, resolved[key], defaults[key], str(signature[key].annotation))
        if isinstance(resolved[key], np.generic):  # numpy scalars -> Python, so params and fingerprints stay plain JSON
            resolved[key] = resolved[key].item()
    return get_method(name).run(problem, **resolved)


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], RunOptions]:
    """A flat parameter dict split into the method's hyperparameters and its :class:`RunOptions` (the other keys)."""
    options = set(run_option_names())
    hyperparameters = {k: v for k, v in params.items() if k not in options}
    return hyperparameters, RunOptions(**{k: v for k, v in params.items() if k in options})


def run_option_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per :class:`RunOptions` field, with its default and annotation (the flat signature)."""
    return [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
        for f in fields(RunOptions)
    ]


def registry_variant(
    fn: Callable[..., MergeResult], fixed: Mapping[str, Any], **defaults: Any
) -> Callable[..., MergeResult]:
    """A registry entry of the test-time method ``fn(problem, *, ..., run=RunOptions)`` with a flat signature.

    ``fixed`` keywords are removed (e.g. the granularity of the task-wise entry), some ``defaults`` changed (still
    overridable); the run options are keywords beside the hyperparameters, split off by :func:`split_params`.
    """
    signature = inspect.signature(fn)
    hyperparameters = [p for p in signature.parameters.values() if p.name != "run"]
    parameters = [
        p.replace(default=defaults[p.name]) if p.name in defaults else p
        for p in hyperparameters + run_option_parameters()
        if p.name not in fixed
    ]

    def run(problem: MergeProblem, **params: Any) -> MergeResult:
        method_params, options = split_params(params)
        return fn(problem, **fixed, **method_params, run=options)

    run.__signature__ = signature.replace(parameters=parameters)
    settings = ", ".join(f"{k}={v}" for k, v in {**fixed, **defaults}.items())
    run.__name__ = f"{fn.__name__}[{settings}]" if settings else fn.__name__
    run.__doc__ = fn.__doc__
    return run


def stream_task_vectors(problem: MergeProblem) -> Iterable[dict[str, Tensor]]:
    """Task vectors of the problem, computed one fine-tuned model at a time."""
    check_finite(problem.pretrained, name="pre-trained model")
    for task in problem.task_names:
        yield task_vector(problem.pretrained, problem.load_finetuned(task), name=f"fine-tuned model {task!r}")


def _run_weight_averaging(problem: MergeProblem) -> MergeResult:
    return MergeResult(weight_averaging(problem.pretrained, stream_task_vectors(problem)), {})


def _run_task_arithmetic(problem: MergeProblem, *, scaling: float = 0.3) -> MergeResult:
    return MergeResult(task_arithmetic(problem.pretrained, stream_task_vectors(problem), scaling), {"scaling": scaling})


def _run_ties_merging(problem: MergeProblem, *, scaling: float = 0.3, density: float = 0.2) -> MergeResult:
    state = ties_merging(problem.pretrained, list(stream_task_vectors(problem)), scaling, density)
    return MergeResult(state, {"scaling": scaling, "density": density})


PAPER = "https://arxiv.org/abs/2312.06173"
ADAMERGING = "https://arxiv.org/abs/2310.02575"

#: One entry per method, in the order the tables list them.
ENTRIES: tuple[MethodSpec, ...] = (
    MethodSpec(
        "weight_averaging",
        "Weight Averaging",
        "https://arxiv.org/abs/2203.05482",
        _run_weight_averaging,
        False,
        lambda pre, tvs: weight_averaging(pre, tvs),
    ),
    MethodSpec(
        "task_arithmetic",
        "Task Arithmetic",
        "https://arxiv.org/abs/2212.04089",
        _run_task_arithmetic,
        False,
        task_arithmetic,
    ),
    MethodSpec(
        "ties_merging",
        "TIES-Merging",
        "https://arxiv.org/abs/2306.01708",
        _run_ties_merging,
        False,
        lambda pre, tvs, **p: ties_merging(pre, list(tvs), **p),
    ),
    MethodSpec("fisher_merging", "Fisher Merging", "https://arxiv.org/abs/2111.09832", baselines.fisher_merging, True),
    MethodSpec("regmean", "RegMean", "https://arxiv.org/abs/2212.09849", baselines.regmean, True),
    MethodSpec(
        "task_wise_adamerging",
        "Task-wise AdaMerging",
        ADAMERGING,
        registry_variant(adamerging.adamerging, {"granularity": "task"}),
        True,
    ),
    MethodSpec(
        "layer_wise_adamerging",
        "Layer-wise AdaMerging",
        ADAMERGING,
        registry_variant(adamerging.adamerging, {"granularity": "layer"}),
        True,
    ),
    MethodSpec(
        "task_wise_adamerging_pp",
        "Task-wise AdaMerging++",
        ADAMERGING,
        registry_variant(adamerging.adamerging, {"granularity": "task"}, ties_density=0.2),
        True,
    ),
    MethodSpec(
        "layer_wise_adamerging_pp",
        "Layer-wise AdaMerging++",
        ADAMERGING,
        registry_variant(adamerging.adamerging, {"granularity": "layer"}, ties_density=0.2),
        True,
    ),
    MethodSpec(
        "concrete_task_arithmetic",
        "Concrete Task Arithmetic",
        PAPER,
        registry_variant(concrete.concrete_task_arithmetic, {}),
        True,
    ),
    MethodSpec(
        "task_wise_concrete_adamerging",
        "Task-wise Concrete AdaMerging",
        PAPER,
        registry_variant(concrete.concrete_adamerging, {"granularity": "task"}),
        True,
    ),
    MethodSpec(
        "layer_wise_concrete_adamerging",
        "Layer-wise Concrete AdaMerging",
        PAPER,
        registry_variant(concrete.concrete_adamerging, {"granularity": "layer"}),
        True,
    ),
)

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in ENTRIES}
