# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · What the learned mask looks like
#
# *Runtime at the mini scale: 2 min (126 s) in a cold `make figures` on the project's 2-core CPU (one torch
# thread, two notebooks at a time, 2026-12-06, the machine shared with other jobs); it reuses notebook 01's cached runs.*
#
# **The question.** The accuracy tables say whether the Concrete methods helped; this notebook opens the mask
# itself. The Concrete methods learn one logit x per merged parameter, shared by all tasks: σ(x) is the probability
# of keeping that parameter's entry in every task vector. All logits start at 0 (keep probability 0.5), so whatever
# structure the mask shows, it learned from the entropy of the merged model's predictions on unlabeled test inputs.
#
# **What is measured**, in the order of the cells below:
# - how many elements each tensor keeps, layer by layer (density = fraction with σ(x) > 0.5, and the mean keep
#   probability), and the distribution of keep probabilities;
# - how far the logits moved (mean |logit| and the share of |logit| > 0.5);
# - the **mask-only effect**: the learned mask at the method's initial coefficients against Task Arithmetic at the
#   same λ, over seeds; this separates what the mask does from what the adapted coefficients do;
# - the **masked individual models**: each fine-tuned model with the learned shared mask applied to its own task
#   vector, θ0 + τ_i ⊙ m / mean(m), next to the unmasked individual model. If the mask removed what matters for a
#   task, that task's masked model would collapse.
#
# The runs are those of notebook 01 (same parameters, same cache keys).

# %%
import torch

from concrete_subspace import experiments as ex
from concrete_subspace import plotting as pl

defaults = ex.defaults("06_mask_analysis")  # the defaults, written once: experiments.MaskConfig

# %% tags=["parameters"]
# papermill overrides any of these (meanings: experiments.MaskConfig)
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

# %%
config, out, started = ex.setup("06_mask_analysis", globals())  # config, offline, 1 thread, out/, scale note
config

# %% [markdown]
# ## Density per layer
# One row per method and layer: the share of elements the mask keeps (σ(x) > 0.5) and the mean keep probability,
# averaged over the layer's tensors.

# %%
problem = ex.problem_for(config)
records = ex.run_methods(problem, config.methods, config)
density = ex.mask_density_table(records)
density.groupby(["method", "layer"], sort=False)[["density", "mean_keep_probability"]].mean()

# %% [markdown]
# Per tensor, in the model's order (left to right from the input), and the histogram of all keep probabilities.
# A mask that learned something shows tensors away from 0.5 and a histogram wider than a spike at 0.5.

# %%
fig = pl.mask_density_figure(density, path=out / "density_per_layer")
probs = {m: torch.sigmoid(r.tensor("mask_logits")).numpy() for m, r in records.items()}
fig = pl.keep_probability_histogram(probs, path=out / "keep_probability")

# %%
# What we see: written from this run's density table (experiments/story.py)
ex.show(ex.story.density_story(density, config.scale))

# %% [markdown]
# ## How far the logits moved
# All logits start at 0. The mean keep probability stays near 0.5 when the mask moves some elements up and as many
# down, so it cannot tell a mask that learned from one that did not. Mean |logit| and the share of |logit| > 0.5
# (keep probability outside 0.38-0.62) are 0 for an untrained mask and grow with what it learned, per tensor below
# and per layer in the table.

# %%
fig = pl.logit_magnitude_figure(density, path=out / "logit_magnitude_per_layer")
logit_layers = ex.logit_layer_table(density)
ex.show(ex.story.logit_story(logit_layers))
logit_layers

# %% [markdown]
# ## The mask-only effect
# The merge at the method's initial coefficients with the learned mask (Concrete TA: its final model, λ fixed;
# Concrete AdaMerging: stage 2 at step 0, w = init, the kept mask) against Task Arithmetic at the same λ, for each
# seed of notebook 01 (its runs, reused). `headline` is the method's final model (one Concrete sample, the paper's
# evaluation); `expected_mask` the same model under σ(x), a diagnostic beside it.

# %%
effect, seed_records = ex.run_mask_effect(config, config.methods)
effect_summary = ex.mask_effect_summary(effect)
ex.show(ex.story.mask_effect_story(effect_summary))
effect

# %% [markdown]
# ## Masked individual models
# The mask is drawn as the method evaluates it (one Concrete sample, rescaled per tensor) and applied to each task's
# own task vector: θ0 + τ_i ⊙ m / mean(m). The table gives every task under every mask.

# %%
masked = ex.masked_individuals(config, problem, records)
masked.pivot_table(index="model", columns="task", values="accuracy", sort=False)

# %%
fig = pl.grouped_bars(
    masked, hue="model", path=out / "masked_individual", title="individual models with the learned mask"
)
ex.show(ex.story.masked_individual_story(masked))

# %%
path = ex.write_outputs(
    config,
    "06_mask_analysis",
    {
        "density": density,
        "logit_layers": logit_layers,
        "mask_effect": effect,
        "mask_effect_summary": effect_summary,
        "masked_individual": masked,
    },
    started=started,
    runs=[*records.values(), *(r for k, r in seed_records.items() if k not in records)],
)
print("outputs written to", path.as_posix().split("figures/")[-1])
