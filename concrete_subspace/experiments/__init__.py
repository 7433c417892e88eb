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
- :mod:`.notebook` the one-call setup of a notebook's first cell
"""

from .configs import (  # noqa: F401
    SCALES, TEST_TIME_METHODS, HEADLINE_METHODS, check_checkpoints, BaseConfig, WalkthroughConfig, MultitaskConfig,
    FlanT5Config, GeneralizationConfig, RobustnessConfig, CurvesConfig, MaskConfig, AblationConfig, CONFIGS,
    THREADS_ENV, set_threads, config_from, out_dir, cache_root
)
from .problems import (  # noqa: F401
    PROBLEM_SCALES, ensure_zoo, load_problem, problem_for, restrict, problem_identity
)
from .params import (  # noqa: F401
    STEP_KEYS, SMOKE_STEPS, SMOKE_OVERRIDES, CURVE_POINTS, MINI_FALLBACK_STEPS, mini_defaults, method_params,
    text_method_params
)
from .cache import (  # noqa: F401
    NON_SEMANTIC, RunRecord, jsonable, problem_code, run_fingerprint, run_key, run_cached, final_scores,
    cached_table, reference_rows, cache_for
)
from .tables import (  # noqa: F401
    tidy_scores, with_average, wide, to_markdown, pretty
)
from .outputs import (  # noqa: F401
    package_versions, device_info, models_info, check_runs_match_models, write_outputs
)
from .runners import (  # noqa: F401
    run_methods, run_multitask, PAPER_GENERALIZATION_SPLITS, MINI_GENERALIZATION_SPLITS, generalization_splits,
    run_generalization, generalization_summary, curves_table, run_curves
)
from .text import (  # noqa: F401
    text_problem, lambda_sweep, run_text_tables, seed_summary, run_flan_t5
)
from .robustness import (  # noqa: F401
    PAPER_ROBUSTNESS_TASKS, MINI_ROBUSTNESS_TASKS, MINI_ROBUSTNESS_STEPS, corrupted_problem, corruption_names,
    run_robustness
)
from .mask_analysis import (  # noqa: F401
    mask_density_table, BLOCK_CONTAINERS, OPEN_CLIP_STEM, layer_of, mask_of, masked_individual_table,
    masked_individuals, eval_mask_table
)
from .ablations import (  # noqa: F401
    run_ablations
)
from .claims import (  # noqa: F401
    Claim, CLAIMS, MULTITASK_CLAIMS, claims, check_claims, claim_col, best_method_claim, averages_of
)
from .regression import (  # noqa: F401
    REGRESSION_METHODS, regression_table, compare_regression
)
from .notebook import setup  # noqa: F401
