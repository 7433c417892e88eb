# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Language models: Flan-T5 + LoRA-16 on GLUE (paper Table 3), and the mini-text zoo
#
# *Runtime at the mini scale: 18 min (1,104 s) in a cold `make figures` on the project's 2-core CPU (one torch
# thread, two notebooks at a time, 2026-12-06, the machine shared with other jobs).*
#
# **The question.** Does Concrete Subspace Learning carry over from image encoders to language models fine-tuned with
# low-rank adapters? Here each task's model is the base model plus one LoRA adapter: the adapter's low-rank update
# B·A is merged into the weights it adapts (`merge_and_unload`), so θ_i − θ0 is a task vector like any other and
# every merging method applies unchanged, on the same code path as the image notebooks.
#
# **`scale="paper"`**: Flan-T5-base/large with one LoRA-16 adapter per GLUE task
# (`tanganke/flan-t5-<size>_glue-<task>_lora-16`); scores are exact match of the generated label (STS-B: Spearman
# ρ × 100). **`scale="mini"`**: the *mini-text* zoo (docs/zoo_text.md): the pre-trained sentence encoder
# all-MiniLM-L6-v2 with one LoRA-16 expert (query/value) per real-text task, each trained against a frozen
# zero-shot head made from label prompts, CLIP-style. Same methods and table layout as Table 3.
#
# **Why a λ sweep.** The test-time methods assume that the entropy of the merged model's predictions on unlabeled
# inputs is a usable stand-in for its error: lower entropy, higher accuracy. At mini scale this notebook tests that
# premise directly, by moving Task Arithmetic's λ from 0 (the pre-trained model) to 1 and recording both
# quantities. If they do not move together, no entropy-minimising method can be expected to beat Task Arithmetic.

# %%
import pandas as pd
from IPython.display import display

from concrete_subspace import experiments as ex
from concrete_subspace import plotting as pl
from concrete_subspace import reference as ref

defaults = ex.defaults("02_flan_t5_glue")  # the defaults, written once: experiments.FlanT5Config

# %% tags=["parameters"]
# papermill overrides any of these (meanings: experiments.FlanT5Config)
scale = defaults.scale
device = defaults.device
zoo_seed = defaults.zoo_seed
run_seed = defaults.run_seed
tasks = defaults.tasks
steps = defaults.steps
smoke = defaults.smoke
figures_dir = defaults.figures_dir
cache_dir = defaults.cache_dir
precision = defaults.precision
methods = defaults.methods
model = defaults.model
limit = defaults.limit
seeds = defaults.seeds
ta_scalings = defaults.ta_scalings

# %%
config, out, started = ex.setup("02_flan_t5_glue", globals())  # config, offline, 1 thread, out/, scale note
config

# %% [markdown]
# ## Running the methods
# At mini scale the test-time methods run once per run seed of `seeds` (batch order and mask samples; the models
# are the mini-text zoo of `zoo_seed`, the shipped one at 0) and the table shows their mean; the λ sweep of Task Arithmetic runs beside them. At paper scale each
# method runs once.

# %%
if config.scale == "paper":
    table, records = ex.run_flan_t5(config)
    runs, sweep = None, None
else:
    tables_text, records = ex.run_text_tables(config)
    runs, sweep = tables_text["runs"], tables_text["lambda_sweep"]
    table = runs.groupby(["method", "task"], sort=False)["accuracy"].mean().reset_index()
wide = ex.wide(table)
wide.index = [ex.pretty(m) for m in wide.index]
wide

# %%
# NBVAL_CHECK_OUTPUT
sorted(table["method"].unique())

# %% [markdown]
# At mini scale: the spread over seeds of each method's average (data-free methods and the reference rows have one
# run), then Task Arithmetic along λ with the merged model's mean softmax entropy on the test inputs, the quantity
# the entropy-based methods minimise.

# %%
spread = ex.seed_summary(runs) if runs is not None else None
if spread is not None:
    display(spread.assign(method=[ex.pretty(m) for m in spread["method"]]))
    display(sweep[sweep["task"] == "average"][["scaling", "accuracy", "entropy"]])

# %% [markdown]
# ## The figure
# Paper scale: every method's average score with the published one beside it. Mini scale, left: each method's
# average accuracy, the bar at the mean over seeds and the whisker one standard deviation; right: Task Arithmetic's
# average accuracy (solid, left axis) and the merged model's mean entropy (dashed, right axis) along λ.

# %%
if config.scale == "paper":
    published = ref.reference_long(ref.TABLE_FOR[config.model])
    fig = pl.average_bars(table, published=published, title=config.model, path=out / "average")
else:
    title = f"mini-text zoo: {len(table['task'].unique()) - 1} tasks, all-MiniLM-L6-v2 + LoRA-16"
    fig = pl.seed_spread_and_lambda_figure(spread, sweep, title=title, path=out / "average")

# %%
# What we see: written from this run's tables (experiments/story.py)
if config.scale != "paper":
    ex.show(ex.story.text_story(spread, sweep, config.scale))

# %% [markdown]
# ## Which claims hold here?
# First the gates a merging benchmark must pass before its orderings mean anything: Task Arithmetic at its best λ
# at least 5 points above zero-shot and at least 5 below the individual models (otherwise there is no interference
# gap to close), and the entropy premise along λ (lower entropy with higher accuracy between λ = 0 and the best λ).
# Then the paper's orderings between methods, each with the number of seeds in which it holds. Computed by
# `experiments/claims.py` from the numbers above.

# %%
claims = None
if config.scale != "paper":
    gates = ex.text_zoo_gates(ex.averages_of(table), sweep)
    claims = pd.concat([gates, ex.ordering_claims(runs)], ignore_index=True)
    ex.show(ex.claim_lines(claims, value="value"))

# %% [markdown]
# ## The mask's own effect
# At mini scale: each Concrete run's learned mask applied at the method's initial coefficients (Concrete TA: its
# final model at λ; Concrete AdaMerging: stage 2's step 0, before any coefficient is adapted), against Task
# Arithmetic at the same λ (read from the λ sweep where Task Arithmetic's own run uses another λ), over the seeds.
# A positive effect is the mask removing interference by itself.

# %%
effect, effect_summary = None, None
if config.scale != "paper":
    average_at = sweep[sweep["task"] == "average"].set_index("scaling")["accuracy"].to_dict()
    effect = ex.mask_effect_table(records, baseline_at=average_at)
    effect_summary = ex.mask_effect_summary(effect)
    ex.show(ex.story.mask_effect_story(effect_summary))

# %% [markdown]
# At paper scale: average scores beside the published ones (the authors' result files). At mini scale the models
# are different, so no published number is comparable and none is shown.

# %%
tables = {"table": table, "wide": ex.wide(table).reset_index()}
if config.scale == "paper":
    tables["beside_published"] = ref.beside(table, published, on=["method", "task"])
    display(tables["beside_published"])
else:
    tables.update(runs=runs, seed_spread=spread, lambda_sweep=sweep, claims=claims)  # claims.md: the gates as a table
    tables.update(mask_effect=effect, mask_effect_summary=effect_summary)

# %%
extra = {"skipped": False}
if config.scale != "paper":
    extra["models"] = ex.text_zoo_models_info(config)
path = ex.write_outputs(config, "02_flan_t5_glue", tables, started=started, runs=records.values(), extra=extra)
print("outputs written to", path.as_posix().split("figures/")[-1])
