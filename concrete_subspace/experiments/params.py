"""The parameters a notebook runs a method with: registry defaults <- scale defaults <- steps/smoke <- overrides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..registry import get_method
from .configs import FlanT5Config

STEP_KEYS = ("steps", "meta_steps", "tta_steps")
SMOKE_STEPS = 2

SMOKE_OVERRIDES: dict[str, dict[str, Any]] = {"fisher_merging": {"num_examples": 16}, "regmean": {"num_examples": 32}}

CURVE_POINTS = 5  # accuracy is evaluated this many times along a test-time run that keeps its curve


# Used when the zoo's MINI_DEFAULTS has no step count for a method (chosen for the 45-minute `make figures`).
MINI_FALLBACK_STEPS: dict[str, int] = {"steps": 100, "meta_steps": 60, "tta_steps": 60}


def mini_defaults() -> dict[str, dict[str, Any]]:
    """Per-method mini-scale defaults from the zoo (chosen on the validation split).

    Imported unconditionally: a fallback to registry defaults on ImportError would silently change the
    hyper-parameters behind a figure.
    """
    from ..zoo import MINI_DEFAULTS

    return {k: dict(v) for k, v in MINI_DEFAULTS.items()}


def method_params(
    name: str,
    *,
    scale: str = "mini",
    steps: int | None = None,
    smoke: bool = False,
    overrides: Mapping[str, Any] | None = None,
    precision: str | None = None,
    seed: int | None = None,
    curves: bool = True,
) -> dict[str, Any]:
    """The parameters a notebook runs ``name`` with: registry defaults <- mini defaults <- steps/smoke <- overrides.

    ``precision`` (None: the method's default) is set on the methods that take one (the test-time methods), and so
    is ``seed``, the run seed of their random streams (None: the method's default, 0).

    Test-time methods also get ``eval_every`` and a quiet progress bar at mini scale. With ``curves`` the accuracy
    is logged CURVE_POINTS times per stage, so the run yields its accuracy curve (notebooks 05 and 07 reuse the
    table's runs for theirs); without, ``eval_every=0``: the run is scored once, on its final state, which saves
    the evaluations (about 40 % of a mini run's time: docs/REPRODUCING.md) and leaves the final scores unchanged.
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
    if seed is not None and "seed" in defaults:
        params["seed"] = seed
    params.update(overrides or {})
    unknown = [k for k in params if k not in defaults]
    if unknown:
        raise KeyError(f"method_params: {name!r} has no parameter(s) {unknown}; valid: {list(defaults)}")
    step_counts = [params.get(k, defaults[k]) for k in STEP_KEYS if k in defaults]
    if step_counts:  # smoke: only the first and last point (each evaluation costs many steps)
        points = 1 if smoke else CURVE_POINTS
        params.setdefault("eval_every", max(1, max(step_counts) // points) if curves else 0)
    if "progress" in defaults:
        params.setdefault("progress", scale == "paper")
    return params


def text_method_params(name: str, config: FlanT5Config, seed: int) -> dict[str, Any]:
    """Parameters of ``name`` on the mini-text zoo: registry <- text_zoo.TEXT_DEFAULTS <- steps/smoke <- run seed.

    Test-time methods log no evaluations along the run (``eval_every=0``): the run is scored once, on its final
    state, and each evaluation costs several steps on this CPU (docs/zoo_text.md, notebook 02's budget).
    """
    from ..text_zoo import TEXT_DEFAULTS, TEXT_FALLBACK_STEPS

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
    return method_params(
        name, scale="mini-text", steps=config.steps, smoke=config.smoke, overrides=overrides, curves=False
    )
