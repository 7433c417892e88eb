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
# The Concrete methods learn one logit per merged parameter. Here: how many elements each tensor keeps
# (density = fraction with σ(x) > 0.5, and the mean keep probability) layer by layer, how far the logits moved
# (mean |logit|, share of |logit| > 0.5), the distribution of keep probabilities, the **mask-only effect** (the
# learned mask at the method's initial coefficients against task arithmetic at the same λ, over seeds), and the
# **masked individual models**: each fine-tuned model with the learned shared mask applied to
# its own task vector, θ0 + τ_i ⊙ m / mean(m), next to the unmasked individual model. If the mask removed what
# matters for a task, that task's masked model would collapse. The runs are those of notebook 01.
#
# **Scale.** At `scale="mini"` (default; offline, CPU) everything runs on the mini zoo (a small CLIP pre-trained here,
# fine-tuned on eight synthetic/real tasks; docs/zoo.md): every number is **ours** on that zoo, not comparable to the
# paper's. At `scale="paper"` the same analysis runs on the paper's models; no published numbers are shown
# at either scale (the paper has no table of mask densities).

# %% tags=["parameters"]
# Parameters (papermill overrides these; names = fields of experiments.MaskConfig)
scale = "mini"  # mini: offline zoo on CPU; paper: Hub models on a GPU
device = "cpu"  # cpu or cuda
seed = 0
tasks = None  # None: all tasks of the scale
steps = None  # None: the scale defaults, at mini the zoo MINI_DEFAULTS
smoke = False  # True: tiny zoo and 2 steps, for CI
figures_dir = "figures"  # outputs go to figures_dir/scale/name/
cache_dir = None  # None: ~/.cache/concrete_subspace/results, shared by the notebooks
precision = "fp32"  # fp32 or bf16 (autocast forward of the test-time methods; learned state stays fp32)
methods = ("concrete_task_arithmetic", "layer_wise_concrete_adamerging")
arch = "ViT-B-32"
checkpoints = None  # paper only: folder of the task_vectors open_clip checkpoints; None: Hub CLIP

# %%
import torch
from IPython.display import Markdown, display

from concrete_subspace import experiments as ex
from concrete_subspace import plotting as pl

config, out, started = ex.setup("06_mask_analysis", globals())  # config from the parameters; offline, 1 thread, out/
config

# %%
problem = ex.problem_for(config)
records = ex.run_methods(problem, config.methods, config)
density = ex.mask_density_table(records)
density.groupby(["method", "layer"], sort=False)[["density", "mean_keep_probability"]].mean()

# %%
fig = pl.mask_density_figure(density, path=out / "density_per_layer")
probs = {m: torch.sigmoid(r.tensor("mask_logits")).numpy() for m, r in records.items()}
fig = pl.keep_probability_histogram(probs, path=out / "keep_probability")

# %% [markdown]
# **How far the logits moved.** All logits start at 0. The mean keep probability stays near 0.5 when the mask moves
# some elements up and as many down, so it cannot tell a mask that learned from one that did not. Mean |logit| and the
# share of |logit| > 0.5 (keep probability outside 0.38-0.62) are 0 for an untrained mask and grow with what it
# learned, per tensor below and per layer in the table.

# %%
fig = pl.logit_magnitude_figure(density, path=out / "logit_magnitude_per_layer")
logit_layers = ex.logit_layer_table(density)
logit_layers

# %% [markdown]
# **The mask-only effect.** The merge at the method's initial coefficients with the learned mask (Concrete TA: its
# final model, λ fixed; Concrete AdaMerging: stage 2 at step 0, w = init, the kept mask) against task arithmetic at
# the same λ, for each seed of notebook 01 (its runs, reused). `headline` is the method's final model (one Concrete
# sample, the paper's evaluation); `expected_mask` the same model under σ(x), a diagnostic beside it.

# %%
effect, seed_records = ex.run_mask_effect(config, config.methods)
effect_summary = ex.mask_effect_summary(effect)
display(
    Markdown(
        "\n".join(
            f"- {ex.pretty(r.method)}: mask alone {r.mask_only_mean:.1f} vs task arithmetic {r.task_arithmetic_mean:.1f} "
            f"({r.mask_effect_mean:+.1f} ± {r.mask_effect_std:.1f} over {r.seeds} seeds); final model "
            f"{r.headline_mean:.1f}, under σ(x) {r.expected_mask_mean:.1f}"
            for r in effect_summary.itertuples()
        )
    )
)
effect

# %% [markdown]
# Masked individual models (mask drawn as the method evaluates it: one Concrete sample, rescaled per tensor):

# %%
masked = ex.masked_individuals(config, problem, records)
masked.pivot_table(index="model", columns="task", values="accuracy", sort=False)

# %%
fig = pl.grouped_bars(
    masked, hue="model", path=out / "masked_individual", title="individual models with the learned mask"
)
avg = masked[masked["task"] == "average"].set_index("model")["accuracy"]
lines = [
    f"- {model}: average {value:.1f} vs unmasked individual {avg['individual']:.1f} ({value - avg['individual']:+.1f})"
    for model, value in avg.items()
    if model != "individual"
]
display(Markdown("\n".join(lines)))

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
