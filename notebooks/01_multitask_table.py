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
# Every method of the registry (`concrete_subspace.registry.METHODS`) merges the eight task models; we score the merged
# encoder on each task's test set with that task's frozen head, beside the zero-shot (pre-trained) and individual
# (fine-tuned) models. Test-time methods (AdaMerging, Concrete TA / AdaMerging) adapt on unlabeled test batches as
# in the paper.
#
# **Scale.** At `scale="mini"` (default; offline, CPU) everything runs on the mini zoo (a small CLIP pre-trained here,
# fine-tuned on eight synthetic/real tasks; docs/zoo.md): every number is **ours** on that zoo, not comparable to the
# paper's. At `scale="paper"` (GPU, Hub checkpoints) it shows the accuracy of every method on the
# paper's eight tasks with the published Tables 1/2 numbers **beside** ours (`beside_published`, labelled "published").

# %% tags=["parameters"]
# Parameters (papermill overrides these; names = fields of experiments.MultitaskConfig)
scale = "mini"  # mini: offline zoo on CPU; paper: Hub models on a GPU
device = "cpu"  # cpu or cuda
seed = 0
tasks = None  # None: all tasks of the scale
steps = None  # None: the scale defaults, at mini the zoo MINI_DEFAULTS
smoke = False  # True: tiny zoo and 2 steps, for CI
figures_dir = "figures"  # outputs go to figures_dir/scale/name/
cache_dir = None  # None: ~/.cache/concrete_subspace/results, shared by the notebooks
precision = "fp32"  # fp32 or bf16 (autocast forward of the test-time methods; learned state stays fp32)
methods = None
arch = "ViT-B-32"
checkpoints = None  # paper only: folder of the task_vectors open_clip checkpoints; None: Hub CLIP
seeds = (0, 1, 2)  # test-time methods re-run per seed (batch order, mask samples); None: seed only

# %%
import pandas as pd
from IPython.display import Markdown, display

from concrete_subspace import experiments as ex
from concrete_subspace import plotting as pl
from concrete_subspace import reference as ref

config, out, started = ex.setup("01_multitask_table", globals())  # config from the parameters; offline, 1 thread, out/
config

# %% [markdown]
# Run (or reuse from the cache) every method; the test-time methods once per seed of `seeds` (the order of the
# unlabeled test batches and the mask samples change; the models do not). Each line reports the method's average
# accuracy and wall time. The table below is the mean over seeds.

# %%
runs, records = ex.run_multitask_seeds(config)
table = ex.mean_over_seeds(runs)

# %%
# NBVAL_CHECK_OUTPUT
sorted(table["method"].unique())

# %% [markdown]
# The table: methods × tasks, accuracy in percent, unweighted average over tasks last.

# %%
# NBVAL_CHECK_OUTPUT
wide = ex.wide(table)
wide.index = [ex.pretty(m) for m in wide.index]
wide

# %% [markdown]
# Seed spread of each method's average accuracy (data-free methods have one run).

# %%
spread = ex.seed_summary(runs)
spread.assign(method=spread["method"].map(ex.pretty)).round(2)

# %% [markdown]
# Average accuracy per method, and the per-task heatmap.

# %%
published = None
if config.scale == "paper":
    published = ref.reference_long(ref.TABLE_FOR[config.arch])
fig = pl.average_bars(
    table,
    published=published,
    title=f"{config.scale} scale: merging {len(table['task'].unique()) - 1} tasks",
    path=out / "average",
)
fig = pl.task_heatmap(table, title="accuracy per task (%)", path=out / "per_task")

# %% [markdown]
# ## Which claims of the paper hold here?
# Each line below is computed from the table above (a claim holds when the first method's average is higher).

# %%
averages = ex.averages_of(table)
claims = ex.check_claims_over_seeds(runs, ex.CLAIMS.values())
best = ex.best_method_claim(averages)


def verdict(ok):
    return "holds" if ok else "does NOT hold"


lines = [
    f"- {c}: **{verdict(h)}** ({d:+.1f} ± {sd:.1f} points over seeds; holds in {k} seeds)"
    for c, d, sd, k, h in zip(
        claims["claim"], claims["difference"], claims["difference std"], claims["seeds holding"], claims["holds"]
    )
]
lines += [
    f"- {c}: **{verdict(h)}** (best merge here: {ex.pretty(b)}, {a:.1f})"
    for c, b, a, h in zip(best["claim"], best["best method"], best["best avg"], best["holds"])
]
display(Markdown("\n".join(lines) if lines else "_no claim could be checked with the methods run_"))
claims

# %% [markdown]
# ## Beside the published numbers (paper scale only)
# At paper scale the published accuracies (authors' result files; see `concrete_subspace/data/reference/README.md`)
# are shown next to ours. At mini scale there is nothing comparable to show.

# %%
tables = {
    "table": table,
    "wide": ex.wide(table).reset_index(),
    "claims": claims,
    "seeds": spread,
    "runs": runs,
    "runtime": pd.DataFrame([{"method": m, "seconds": r.seconds, "cached": r.cached} for m, r in records.items()]),
}
if config.scale == "paper":
    tables["beside_published"] = ref.beside(table, published, on=["method", "task"])
    display(tables["beside_published"])
else:
    display(
        Markdown(
            "_mini scale: published numbers are for CLIP ViT-B/32 and ViT-L/14 and are not shown beside mini results._"
        )
    )

# %%
path = ex.write_outputs(config, "01_multitask_table", tables, started=started, runs=records.values())
print("outputs written to", path.as_posix().split("figures/")[-1])
