"""Experiment configs and runners behind the notebooks: one frozen dataclass per notebook, tidy tables, results JSON.

Each notebook's papermill ``parameters`` cell holds exactly the fields of its config dataclass
(:func:`config_from` builds the config from the notebook's variables; :func:`setup` does that and the rest of a
notebook's first cell). Runners take a config and return tidy ``pandas`` tables (one row per method x task);
:func:`write_outputs` saves them as CSV + Markdown next to a results JSON, written atomically. Merge runs are cached
on disk (:mod:`.cache`), so the notebooks share runs and an interrupted run resumes. Cache root:
``$CONCRETE_SUBSPACE_CACHE/results`` or ``~/.cache/concrete_subspace/results`` (never inside git).

One module per concern; every public name is importable from here:

- :mod:`.configs` the config dataclasses, ``CONFIGS`` (notebook -> config), output and cache folders, threads
- :mod:`.problems` the merge problem of a scale (mini zoo, mini-text zoo, paper models)
- :mod:`.params` the parameters a notebook runs a method with
- :mod:`.cache` the run cache (keys, code fingerprints, records) and the zero-shot / individual rows
- :mod:`.tables` tidy, wide and Markdown tables
- :mod:`.outputs` provenance glue: tables + results JSON (config, versions, device, runs)
- :mod:`.runners` notebooks 01, 03, 05; :mod:`.text` notebook 02; :mod:`.robustness` notebook 04;
  :mod:`.mask_analysis` notebook 06; :mod:`.ablations` notebook 07
- :mod:`.claims` the paper's claims by name; :mod:`.regression` the smoke regression table
- :mod:`.notebook` the parameters' defaults and the one-call setup of a notebook's first cells
- :mod:`.story` the "What we see" paragraphs, written from a run's own tables, and the shared scale note
"""

from . import story  # noqa: F401  (the "What we see" paragraphs: ex.story.<name>)
from .ablations import run_ablations  # noqa: F401
from .cache import (  # noqa: F401
    NON_SEMANTIC,
    RunRecord,
    cache_for,
    cached_table,
    final_scores,
    jsonable,
    problem_code,
    reference_rows,
    run_cached,
    run_fingerprint,
    run_key,
)
from .claims import (  # noqa: F401
    CLAIMS,
    TEXT_ORDERINGS,
    Claim,
    ablation_claims,
    averages_of,
    best_method_claim,
    best_method_lines,
    check_claims,
    check_claims_over_seeds,
    claim_col,
    claim_lines,
    claims,
    condition_count_lines,
    curve_progress,
    meta_learning_claims,
    ordering_claims,
    per_condition_claims,
    seed_summary,
    split_claims,
    text_zoo_gates,
    verdict,
)
from .configs import (  # noqa: F401
    CONFIGS,
    HEADLINE_METHODS,
    SCALES,
    TEST_TIME_METHODS,
    THREADS_ENV,
    AblationConfig,
    BaseConfig,
    CurvesConfig,
    FlanT5Config,
    GeneralizationConfig,
    MaskConfig,
    MultitaskConfig,
    RobustnessConfig,
    WalkthroughConfig,
    cache_root,
    check_checkpoints,
    config_from,
    out_dir,
    set_threads,
)
from .mask_analysis import (  # noqa: F401
    BLOCK_CONTAINERS,
    OPEN_CLIP_STEM,
    eval_mask_table,
    layer_of,
    logit_layer_table,
    mask_density_table,
    mask_effect_summary,
    mask_effect_table,
    mask_of,
    mask_only_scores,
    masked_individual_table,
    masked_individuals,
)
from .notebook import defaults, setup, show  # noqa: F401
from .outputs import check_runs_match_models, device_info, models_info, package_versions, write_outputs  # noqa: F401
from .params import (  # noqa: F401
    CURVE_POINTS,
    MINI_FALLBACK_STEPS,
    SMOKE_OVERRIDES,
    SMOKE_STEPS,
    STEP_KEYS,
    method_params,
    mini_defaults,
    text_method_params,
)
from .problems import PROBLEM_SCALES, ensure_zoo, load_problem, problem_for, problem_identity, restrict  # noqa: F401
from .regression import REGRESSION_METHODS, compare_regression, regression_table  # noqa: F401
from .robustness import (  # noqa: F401
    MINI_ROBUSTNESS_STEPS,
    MINI_ROBUSTNESS_TASKS,
    PAPER_ROBUSTNESS_TASKS,
    corrupted_problem,
    corruption_names,
    run_robustness,
)
from .runners import (  # noqa: F401
    MINI_GENERALIZATION_SPLITS,
    PAPER_BUDGET_RUN,
    PAPER_CTA_BUDGET,
    PAPER_GENERALIZATION_SPLITS,
    curves_table,
    generalization_splits,
    generalization_summary,
    mean_over_seeds,
    meta_stage_table,
    run_curves,
    run_generalization,
    run_mask_effect,
    run_methods,
    run_multitask,
    run_multitask_seeds,
    run_paper_budget,
)
from .tables import pretty, runtime_table, tidy_scores, to_markdown, wide, with_average  # noqa: F401
from .text import lambda_sweep, run_flan_t5, run_text_tables, text_problem, text_zoo_models_info  # noqa: F401
