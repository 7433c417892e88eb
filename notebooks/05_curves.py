# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Accuracy over meta-learning and test-time-adaptation steps (paper Figure 3)
#
# *Runtime at the mini scale: 10 min (617 s) in a cold `make figures` on the project's 2-core CPU (one torch
# thread, two notebooks at a time, 2026-12-06, the machine shared with other jobs); it reuses notebook 01's cached runs and adds one 2,000-step Concrete TA run.*
#
# **The question.** A final accuracy says whether a test-time method helped; the curve along its steps says how:
# whether the entropy it minimises pulls accuracy up steadily, saturates early, or overshoots. Concrete AdaMerging
# has two stages, and each gets its own curve:
#
# 1. **meta-learning of the mask** (left panel): the mask logits x are updated so that ONE adaptation step of the
#    merge coefficients w under the sampled mask lowers the entropy. The curve scores the model the mask gradient is
#    taken at: the evaluation mask with w′, the coefficients after that one inner step;
# 2. **test-time adaptation** (right panel): one mask sample is drawn and frozen, and w is adapted for many steps
#    as in plain AdaMerging, which is drawn beside it (with Concrete TA) for comparison.
#
# Every test-time run logs the accuracy of its current merged model every `eval_every` steps (`CURVE_POINTS` times
# per stage). The runs are those of notebook 01 (same parameters, same cache key), so this notebook only reads and
# draws them unless 01 has not run yet.

# %%
from concrete_subspace import experiments as ex
from concrete_subspace import plotting as pl
from concrete_subspace import reference as ref

defaults = ex.defaults("05_curves")  # the defaults, written once: experiments.CurvesConfig

# %% tags=["parameters"]
# papermill overrides any of these (meanings: experiments.CurvesConfig)
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
config, out, started = ex.setup("05_curves", globals())  # config, offline, 1 thread, out/, scale note
config

# %%
curves, records = ex.run_curves(config)

# %%
# NBVAL_CHECK_OUTPUT
sorted(curves["stage"].unique())

# %% [markdown]
# ## The curves
# Average accuracy over the tasks along each run: left the mask meta-learning stage of the Concrete AdaMerging
# methods, right the adaptation stage of every test-time method (at paper scale with the authors' logged curves
# beside ours). Step 0 is the merge before any update.

# %%
published = ref.load_reference("curves_vit_b32") if config.scale == "paper" else None
fig = pl.curves_figure(curves, published=published, path=out / "curves", title="average accuracy along the runs")

# %%
# What we see: written from this run's curves (experiments/story.py)
progress_table = ex.curve_progress(curves)
ex.show(ex.story.curves_story(progress_table, config.scale))

# %% [markdown]
# ## Per task, for the layer-wise methods
# The average can hide tasks moving in opposite directions: the loss is the entropy summed over all tasks, so a
# step that makes one task's predictions much more confident may make another's worse. One panel per run and stage.

# %%
for method, stage in [
    ("layer_wise_concrete_adamerging", "meta"),
    ("layer_wise_concrete_adamerging", "tta"),
    ("layer_wise_adamerging", "tta"),
]:
    if method in records:
        fig = pl.curves_per_task(curves, method, stage, path=out / f"{method}_{stage}")
        ex.show(ex.story.per_task_story(curves, method, stage))

# %% [markdown]
# ## What the meta-stage curve measures
# The meta-stage curve scores the model the mask gradient is taken at: the evaluation mask with w′, the coefficients
# after ONE inner Adam step (lr `inner_lr`, 1 in the paper) from the reset w. Its step-0 point is scored before any
# inner step, at the initial w, so it is a different model from every later point. Left, dashed: the same mask at the
# initial coefficients (the mask's own effect; stage 2 starts from this model). Right: the share of w′ at or beyond
# 0 or 1 (solid) and the mean |logit| (dotted). A solid line that falls while the dashed one holds or rises means the
# drop comes from the one large inner step pushing w′ to the bounds, not from the mask.

# %%
meta = ex.meta_stage_table(records)
if not meta.empty:
    fig = pl.meta_stage_figure(meta, path=out / "meta_stage")
    ex.show(ex.story.meta_stage_story(meta))
meta

# %% [markdown]
# ## Which claims hold here?
# The paper's curves show (a) accuracy rising during mask meta-learning and (b) Concrete AdaMerging ending above
# AdaMerging at the same granularity (task-wise, layer-wise). (a) is read off the logged curves (first to last
# point of the meta stage); (b) compares the final models (`experiments/claims.py`):

# %%
final = {m: r.average for m, r in records.items()}
claims = ex.check_claims(final, ex.claims("task_wise_concrete_am_beats_am", "layer_wise_concrete_am_beats_am"))
ex.show(ex.claim_lines(ex.meta_learning_claims(progress_table)) + "\n" + ex.claim_lines(claims))
progress_table

# %% [markdown]
# ## Concrete TA at the paper's mask budget
# The paper trains Concrete TA's mask with Adam at lr 1e-3 for 2,000 steps; the mini default is shorter with a larger
# lr (docs/method.md §7a; chosen on the validation split). Adam moves each logit by at most about lr per step, so
# lr × steps bounds how far the mask can move. Here both budgets run on the same zoo and run seed (one seed only: the
# 2,000-step run is the longest single run of `make figures`); the curve shows whether the paper's budget keeps rising
# where the mini one stops.

# %%
budget_curves, budget_records = ex.run_paper_budget(config)
fig = pl.budget_figure(
    budget_curves,
    {
        name: f"lr {r.params['lr']:g} × {r.params['steps']} steps" + (" (paper)" if name == ex.PAPER_BUDGET_RUN else "")
        for name, r in budget_records.items()
    },
    path=out / "concrete_ta_budget",
    title="Concrete TA: mini default vs the paper's budget",
)
ex.show(
    ex.story.paper_budget_story(
        budget_records["concrete_task_arithmetic"], budget_records[ex.PAPER_BUDGET_RUN], config.scale
    )
)

# %%
path = ex.write_outputs(
    config,
    "05_curves",
    {
        "curves": curves,
        "progress": progress_table,
        "claims": claims,
        "meta_stage": meta,
        "concrete_ta_budget": budget_curves,
    },
    started=started,
    runs=[*records.values(), budget_records[ex.PAPER_BUDGET_RUN]],
)
print("outputs written to", path.as_posix().split("figures/")[-1])
