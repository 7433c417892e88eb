"""Notebook 02: Flan-T5 + LoRA on GLUE at paper scale; at mini scale the mini-text zoo, per seed, with the λ sweep."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..merging import task_arithmetic
from ..problem import MergeProblem
from ..registry import METHODS, get_method
from ..task_vectors import task_vector
from .cache import RunRecord, cache_for, cached_table, reference_rows, run_cached
from .configs import FlanT5Config
from .params import STEP_KEYS, text_method_params
from .problems import load_problem, problem_identity
from .runners import mean_over_seeds, run_methods
from .tables import tidy_scores, with_average


def text_problem(config: FlanT5Config, seed: int, split: str = "test") -> MergeProblem:
    """The mini-text problem of the zoo of ``config.zoo_seed``, its test-time batches ordered by the run seed ``seed``."""
    return load_problem("mini-text", config.tasks, config.device, split, seed, config.smoke, zoo_seed=config.zoo_seed)


def lambda_sweep(problem: MergeProblem, scalings: Sequence[float]) -> pd.DataFrame:
    """Task arithmetic at each λ: accuracy and mean softmax entropy (of the task's own head) per task."""
    from ..text_zoo import task_logits_on

    vectors = [task_vector(problem.pretrained, problem.load_finetuned(t)) for t in problem.task_names]
    rows = []
    for scaling in scalings:
        state = task_arithmetic(problem.pretrained, vectors, float(scaling))
        for task in problem.task_names:
            logits, labels = task_logits_on(problem, state, task)
            logp = logits.log_softmax(-1)
            rows.append(
                {
                    "scaling": float(scaling),
                    "task": task,
                    "accuracy": 100.0 * float((logits.argmax(-1) == labels).float().mean()),
                    "entropy": float(-(logp.exp() * logp).sum(-1).mean()),
                }
            )
    table = pd.DataFrame(rows)
    return with_average(table, "scaling", ["accuracy", "entropy"])


def run_text_tables(config: FlanT5Config) -> tuple[dict[str, pd.DataFrame], dict[str, RunRecord]]:
    """Mini scale of notebook 02: every method on the mini-text zoo; test-time methods once per seed; the λ sweep."""
    cache = cache_for(config)
    seeds = tuple(config.seeds or (config.run_seed,))
    base = text_problem(config, seeds[0])
    rows = reference_rows(base, cache_dir=cache)
    frames = [
        tidy_scores("zero_shot", rows["zero_shot"], seed=seeds[0]),
        tidy_scores("individual", rows["individual"], seed=seeds[0]),
    ]
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
    sweep = (
        cached_table(
            cache,
            "text_lambda_sweep",
            {**problem_identity(base), "scalings": scalings},
            lambda: lambda_sweep(base, scalings),
        )
        if scalings
        else pd.DataFrame()
    )
    return {"runs": pd.concat(frames, ignore_index=True), "lambda_sweep": sweep}, records


def run_flan_t5(config: FlanT5Config) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """Table 3: Flan-T5 + LoRA-16 on GLUE (paper; STS-B: Spearman x 100), or at scale mini the mini-text zoo.

    At mini scale the table is the mean over ``config.seeds`` (test-time methods; data-free ones have one run);
    :func:`run_text_tables` also returns the per-seed rows and the λ sweep.
    """
    if config.scale == "mini":
        tables, records = run_text_tables(config)
        runs = tables["runs"]
        return mean_over_seeds(runs), records
    problem = load_problem(
        "paper",
        config.tasks,
        config.device,
        "test",
        config.run_seed,
        False,
        arch="flan-t5",
        model=config.model,
        limit=config.limit,
    )
    rows = reference_rows(problem, cache_dir=cache_for(config))
    records = run_methods(problem, config.methods or tuple(METHODS), config)
    table = pd.concat(
        [tidy_scores("zero_shot", rows["zero_shot"]), tidy_scores("individual", rows["individual"])]
        + [tidy_scores(m, r.scores) for m, r in records.items()],
        ignore_index=True,
    )
    return table, records


def text_zoo_models_info(config: FlanT5Config) -> dict:
    """The mini-text zoo a notebook-02 run used, for its results JSON: creation date, encoder source, expert accuracy."""
    from .. import text_zoo

    manifest = text_zoo.read_text_manifest(text_zoo.default_text_zoo_dir(0, config.smoke))
    return {
        "scale": "mini-text",
        "zoo_created": manifest["created"],
        "encoder": manifest["encoder"]["source"],
        "zoo_accuracy_test": manifest["accuracy"]["test"],
    }
