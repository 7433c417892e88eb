# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Robustness to corrupted test data (paper Table 4)
#
# *Runtime at the mini scale: 7 min (418 s) in a cold `make figures` on the project's 2-core CPU (one torch
# thread, two notebooks at a time, 2026-12-06, the machine shared with other jobs).*
#
# **The question.** The test-time methods learn from the test inputs themselves. In deployment those inputs are
# often degraded: blurred, noisy, compressed. Does learning the merge (and the mask) on corrupted inputs still work,
# or does the entropy signal lead the adaptation astray when the images are hard to classify?
#
# **The experiment.** Four tasks are merged while their unlabeled test data are corrupted (motion blur, impulse
# noise, Gaussian noise, pixelate, spatter, contrast, JPEG; `concrete_subspace.data.corruptions`, ImageNet-C
# severities). The test-time methods adapt on the corrupted images and are scored on them, as fusion_bench's
# robustness configurations do; the data-free merges do not look at the data, so only their scores change. "clean"
# is the reference column. Paper scale: Cars, EuroSAT, RESISC45, GTSRB; mini scale: `ex.MINI_ROBUSTNESS_TASKS`.
# At mini scale with `steps=None`, every test-time run here uses `ex.MINI_ROBUSTNESS_STEPS` steps (eight conditions
# repeat every run; this keeps `make figures` within its time budget on two CPU cores).

# %%
from concrete_subspace import experiments as ex
from concrete_subspace import plotting as pl

defaults = ex.defaults("04_robustness")  # the defaults, written once: experiments.RobustnessConfig

# %% tags=["parameters"]
# papermill overrides any of these (meanings: experiments.RobustnessConfig)
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
corruptions = defaults.corruptions
severity = defaults.severity
arch = defaults.arch
checkpoints = defaults.checkpoints

# %%
config, out, started = ex.setup("04_robustness", globals())  # config, offline, 1 thread, out/, scale note
config

# %% [markdown]
# ## Running every method under every corruption
# One merge per method and condition; the table shows each method's average accuracy over the four tasks
# (rows) under each condition (columns).

# %%
table, records = ex.run_robustness(config)
averages = table[table["task"] == "average"].pivot_table(
    index="method", columns="corruption", values="accuracy", sort=False
)
averages.index = [ex.pretty(m) for m in averages.index]
averages

# %% [markdown]
# ## The figure
# Each method's average accuracy under each corruption at severity `config.severity`, clean data first. A method
# robust to corruption keeps its rank across the conditions; a drop that is larger for the test-time methods than
# for Task Arithmetic would mean that adapting on corrupted data hurts.

# %%
fig = pl.robustness_figure(
    table, path=out / "robustness", title=f"average accuracy under corruption (severity {config.severity})"
)

# %%
# What we see: written from this run's table (experiments/story.py)
ex.show(ex.story.robustness_story(table, config.scale))

# %% [markdown]
# ## Which claims of the paper hold here?
# The paper reports that the Concrete methods beat their counterparts under every corruption. Each claim is
# checked under each condition; the count says under how many it held (`experiments/claims.py`):

# %%
claims = ex.per_condition_claims(table, ["concrete_ta_beats_ta", "layer_wise_concrete_am_beats_am"], "corruption")
ex.show(ex.condition_count_lines(claims))
claims

# %%
path = ex.write_outputs(
    config,
    "04_robustness",
    {"table": table, "averages": averages.reset_index(names="method"), "claims": claims},
    started=started,
    runs=records.values(),
)
print("outputs written to", path.as_posix().split("figures/")[-1])
