# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Generalization to unseen tasks (paper Table 5)
#
# *Runtime at the mini scale: 8 min (457 s) in a cold `make figures` on the project's 2-core CPU (one torch
# thread, two notebooks at a time, 2026-12-06, the machine shared with other jobs).*
#
# **The question.** The test-time methods adapt the merge, and the Concrete methods learn their mask, on the
# unlabeled test inputs of the tasks being merged. Does what they learn only fit those tasks, or does it also help
# tasks the merge never saw? If the mask removes interference (parameters on which the task vectors disagree), it
# should not hurt, and might help, a task outside the merge; if it merely fits the adaptation data, the unseen tasks
# should fall behind Task Arithmetic.
#
# **The experiment.** Merge only six "seen" tasks (all adaptation happens on their test inputs), then score the
# merged encoder on all eight: the two held-out tasks are scored through their own frozen heads, with an encoder
# that never saw their inputs. Two splits, as in the paper: at paper scale exp1 holds out MNIST and EuroSAT, exp2
# RESISC45 and SVHN; at mini scale the analogous mini tasks (`ex.MINI_GENERALIZATION_SPLITS`). Each split reports the
# average over its seen and over its unseen tasks.

# %%
from IPython.display import display

from concrete_subspace import experiments as ex
from concrete_subspace import plotting as pl
from concrete_subspace import reference as ref

defaults = ex.defaults("03_generalization")  # the defaults, written once: experiments.GeneralizationConfig

# %% tags=["parameters"]
# papermill overrides any of these (meanings: experiments.GeneralizationConfig)
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
config, out, started = ex.setup("03_generalization", globals())  # config, offline, 1 thread, out/, scale note
config

# %% [markdown]
# ## Running the two splits
# Every method merges the six seen tasks of each split (the test-time methods adapt on their test inputs only);
# the summary has one row per split and method with the seen and unseen averages.

# %%
print("unseen tasks per split:", ex.generalization_splits(config))
table, records = ex.run_generalization(config)
summary = ex.generalization_summary(table)
summary

# %% [markdown]
# ## The figure
# For each split, every method's average on the seen tasks beside its average on the unseen ones. The seen bars
# measure how well the merge serves the tasks it was built from; the unseen bars measure what carries over.

# %%
fig = pl.generalization_bars(summary, path=out / "seen_unseen", title="average accuracy on seen and unseen tasks")

# %%
# What we see: written from this run's summary (experiments/story.py)
ex.show(ex.story.generalization_story(summary, config.scale))

# %% [markdown]
# ## Which claims of the paper hold here?
# The paper reports that Concrete TA beats Task Arithmetic on both seen and unseen tasks, and that layer-wise
# Concrete AdaMerging beats layer-wise AdaMerging on the seen tasks; we also check TIES-Merging against Task
# Arithmetic. Each claim is checked per split, on the seen and on the unseen average (`experiments/claims.py`):

# %%
claims = ex.split_claims(summary, ["concrete_ta_beats_ta", "layer_wise_concrete_am_beats_am", "ties_beats_ta"])
ex.show(ex.claim_lines(claims, context=("split", "tasks")))

# %% [markdown]
# At paper scale the published Table 5 averages are shown beside ours; at mini scale the tasks differ and nothing
# published is comparable.

# %%
tables = {"table": table, "summary": summary, "claims": claims}
if config.scale == "paper":
    published = ref.load_reference("clip_vit_b32_generalization").rename(columns={"setting": "split"})
    tables["beside_published"] = summary.merge(
        published, on=["split", "method"], how="left", suffixes=(" (ours)", " (published)")
    )
    display(tables["beside_published"])

# %%
path = ex.write_outputs(
    config,
    "03_generalization",
    tables,
    started=started,
    runs=records.values(),
    extra={"splits": ex.generalization_splits(config)},
)
print("outputs written to", path.as_posix().split("figures/")[-1])
