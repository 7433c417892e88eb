# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Multi-task merging table (paper Tables 1 and 2)
#
# *Runtime at the mini scale: 31 min (1,838 s) in a cold `make figures` on the project's 2-core CPU (one torch
# thread, two notebooks at a time, 2026-12-06, the machine shared with other jobs).*
#
# **The question.** Eight models were fine-tuned from one pre-trained model, one per task. Can a single set of
# weights do all eight tasks, without the training data and without training a multi-task model? Every merging
# method answers with a different formula for combining the fine-tuned weights; this notebook runs all of them
# (`concrete_subspace.registry.METHODS`) on the same eight models and scores the one merged encoder on each task's
# test set, through that task's frozen classification head.
#
# **The rows of the table**, from the weakest to the strongest reference:
# - *zero-shot*: the pre-trained model itself, θ0: the floor any merge should clear;
# - *data-free merges*: weight averaging, Task Arithmetic (θ0 + λ Σ τ_i with τ_i = θ_i − θ0), TIES-Merging (trims
#   small entries and resolves sign conflicts before summing), Fisher merging and RegMean (weighted by statistics of
#   the training inputs);
# - *test-time merges*: AdaMerging learns the merge coefficients (one per task, or one per task and layer) by
#   minimising the entropy of the merged model's predictions on **unlabeled test inputs**; the Concrete methods of
#   the paper additionally learn one shared mask over the task vectors (Concrete TA around Task Arithmetic, Concrete
#   AdaMerging around AdaMerging), so that parameters on which the tasks interfere are dropped before merging;
# - *individual*: each task scored with its own fine-tuned model: the ceiling a single merged model can approach.
#
# The paper's claim is that the mask closes part of the gap between the merges and the individual models. The
# claims cell at the end checks that claim, and the orderings between methods, on this run's numbers.

# %%
from IPython.display import display

from concrete_subspace import experiments as ex
from concrete_subspace import plotting as pl
from concrete_subspace import reference as ref

defaults = ex.defaults("01_multitask_table")  # the defaults, written once: experiments.MultitaskConfig

# %% tags=["parameters"]
# papermill overrides any of these (meanings: experiments.MultitaskConfig)
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
arch = defaults.arch
checkpoints = defaults.checkpoints
seeds = defaults.seeds

# %%
config, out, started = ex.setup("01_multitask_table", globals())  # config, offline, 1 thread, out/, scale note
config

# %% [markdown]
# ## Running every method
# Runs are cached on disk under a key made of everything that changes their result (method, parameters, models,
# code), so the other notebooks reuse them and a re-run only redraws. The test-time methods run once per run seed
# of `seeds`: the run seed changes the order of the unlabeled test batches and the Concrete mask samples, never the
# models (those are the zoo of `zoo_seed`), so the spread over seeds is the noise of the method itself. Each printed line reports a method's average
# accuracy and wall time; the table below is the mean over seeds.

# %%
runs, records = ex.run_multitask_seeds(config)
table = ex.mean_over_seeds(runs)

# %%
# NBVAL_CHECK_OUTPUT
sorted(table["method"].unique())

# %% [markdown]
# The table: methods × tasks, accuracy in percent, the unweighted average over tasks last (the number the paper
# ranks methods by). Read each column against the *individual* row: the distance to it is what merging lost on
# that task.

# %%
# NBVAL_CHECK_OUTPUT
wide = ex.wide(table)
wide.index = [ex.pretty(m) for m in wide.index]
wide

# %% [markdown]
# How much each method's average moves from seed to seed (the data-free methods have one run). A difference
# between two methods smaller than this spread is not a finding.

# %%
spread = ex.seed_summary(runs)
spread.assign(method=spread["method"].map(ex.pretty)).round(2)

# %% [markdown]
# ## The figure
# Left: the average accuracy of every method (at paper scale, the published value beside ours). Right: the same
# numbers per task, as a heatmap, so a method that wins on average by sacrificing one task shows as one dark cell.

# %%
published = ref.reference_long(ref.TABLE_FOR[config.arch]) if config.scale == "paper" else None
fig = pl.average_bars(
    table,
    published=published,
    title=f"{config.scale} scale: merging {len(table['task'].unique()) - 1} tasks",
    path=out / "average",
)
fig = pl.task_heatmap(table, title="accuracy per task (%)", path=out / "per_task")

# %%
# What we see: written from this run's table (experiments/story.py)
published_averages = ex.story.published_averages(ref.TABLE_FOR[config.arch])  # context only, never ours
ex.show(ex.story.multitask_story(table, config.scale, published_averages, config.arch))

# %% [markdown]
# ## Which claims of the paper hold here?
# Each claim compares two methods' averages: it holds when the first is higher on the mean over seeds; the spread
# and the number of seeds in which it held follow. The last line asks whether layer-wise Concrete AdaMerging, the
# paper's best method, is also the best merge here. Computed by `experiments/claims.py` from the table above.

# %%
claims = ex.check_claims_over_seeds(runs, ex.CLAIMS.values())
best = ex.best_method_claim(ex.averages_of(table))
ex.show(ex.claim_lines(claims) + "\n" + ex.best_method_lines(best))
claims

# %% [markdown]
# ## Beside the published numbers (paper scale only)
# At paper scale the published accuracies (the authors' result files; `concrete_subspace/data/reference/README.md`)
# are shown next to ours, method by method and task by task. At mini scale the models differ, so nothing published
# is comparable and nothing is shown.

# %%
tables = {
    "table": table,
    "wide": ex.wide(table).reset_index(),
    "claims": claims,
    "seeds": spread,
    "runs": runs,
    "runtime": ex.runtime_table(records),
}
if config.scale == "paper":
    tables["beside_published"] = ref.beside(table, published, on=["method", "task"])
    display(tables["beside_published"])

# %%
path = ex.write_outputs(config, "01_multitask_table", tables, started=started, runs=records.values())
print("outputs written to", path.as_posix().split("figures/")[-1])
