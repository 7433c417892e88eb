# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Ablations of Concrete Task Arithmetic
#
# *Runtime at the mini scale: 13 min (754 s) in a cold `make figures` on the project's 2-core CPU (one torch
# thread, two notebooks at a time, 2026-12-06, the machine shared with other jobs).*
#
# **The question.** Concrete Task Arithmetic (CTA) has few knobs: the temperature of its Concrete samples, the
# number of steps, the fixed Task Arithmetic coefficient λ_TA it merges with, and how the learned logits are turned
# into a mask at evaluation. Which of them matter, and does its gain over Task Arithmetic (TA) depend on how many
# tasks are merged? Each ablation changes one factor at a time around the scale's default CTA run, with TA beside it
# where it applies:
#
# - **temperature** λ of the Concrete samples m = σ((log u − log(1 − u) + x) / λ): a low temperature gives samples
#   near 0 or 1 (close to a binary mask, but noisy gradients), a high one samples near σ(x/λ) (smooth gradients,
#   but a mask unlike the hard one it stands for);
# - **steps**: accuracy along the default run (exactly the accuracy of a shorter run: Adam without a schedule and an
#   evaluation mask seeded independently of the step count);
# - **λ_TA**: the fixed task-arithmetic coefficient (a fine sweep for TA, a few values for CTA): is CTA's gain just a
#   different effective λ?
# - **evaluation mask**: the learned logits evaluated with one continuous sample (the paper), the expectation σ(x),
#   a hard threshold σ(x) > 0.5, or a Bernoulli draw, with no re-training;
# - **number of tasks**: the first k tasks merged; interference should grow with k, and so should the mask's gain.

# %%
from IPython.display import display

from concrete_subspace import experiments as ex
from concrete_subspace import plotting as pl

defaults = ex.defaults("07_ablations")  # the defaults, written once: experiments.AblationConfig

# %% tags=["parameters"]
# papermill overrides any of these (meanings: experiments.AblationConfig)
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
temperatures = defaults.temperatures
scalings = defaults.scalings
ta_scalings = defaults.ta_scalings
eval_masks = defaults.eval_masks
task_counts = defaults.task_counts
arch = defaults.arch
checkpoints = defaults.checkpoints

# %%
config, out, started = ex.setup("07_ablations", globals())  # config, offline, 1 thread, out/, scale note
config

# %%
tables, records = ex.run_ablations(config)

# %%
# NBVAL_CHECK_OUTPUT
sorted(tables)

# %% [markdown]
# ## The figure
# One panel per factor, the average accuracy over tasks on the vertical axis: CTA's temperature; accuracy along
# the default run's steps; λ_TA for TA and CTA; the evaluation masks (bars); the number of tasks merged,
# CTA beside TA.

# %%
fig = pl.ablation_figure(tables, path=out / "ablations")

# %%
# What we see: written from this run's ablation tables (experiments/story.py)
ex.show(ex.story.ablation_story(tables, config.scale))

# %% [markdown]
# The average accuracy of each ablation (full per-task tables are in the CSV files):

# %%
for name, frame in tables.items():
    keys = [c for c in frame.columns if c not in ("method", "task", "accuracy", "stage")]
    avg = frame[frame["task"] == "average"]
    ex.show(f"**{name}**")
    display(avg.pivot_table(index=keys, columns="method", values="accuracy", sort=False) if keys else avg)

# %% [markdown]
# ## Which observations of the paper hold here?
# The paper found λ = 0.5 a good temperature, and CTA gaining over TA at every λ_TA and for every number of tasks.
# Each is checked on the tables above (`experiments/claims.py`):

# %%
claims = ex.ablation_claims(tables)
ex.show(ex.claim_lines(claims))

# %%
path = ex.write_outputs(config, "07_ablations", tables, started=started, runs=records.values())
print("outputs written to", path.as_posix().split("figures/")[-1])
