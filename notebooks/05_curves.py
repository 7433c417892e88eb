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
# Every test-time run logs the accuracy of its current merged model every `eval_every` steps (`CURVE_POINTS` times per
# stage). Concrete AdaMerging has two stages: **meta-learning** of the mask (left panel: accuracy of the mask with the
# one-step-adapted coefficients) and **test-time adaptation** of the coefficients under the frozen mask (right panel,
# beside plain AdaMerging and Concrete TA). The runs are those of notebook 01 (same parameters, same cache key).
#
# **Scale.** At `scale="mini"` (default; offline, CPU) everything runs on the mini zoo (a small CLIP pre-trained here,
# fine-tuned on eight synthetic/real tasks; docs/zoo.md): every number is **ours** on that zoo, not comparable to the
# paper's. At `scale="paper"` it draws the published ViT-B/32 curves (authors' logs) **beside** ours.

# %% tags=["parameters"]
# Parameters (papermill overrides these; names = fields of experiments.CurvesConfig)
scale = "mini"  # mini: offline zoo on CPU; paper: Hub models on a GPU
device = "cpu"  # cpu or cuda
seed = 0
tasks = None  # None: all tasks of the scale
steps = None  # None: the scale defaults, at mini the zoo MINI_DEFAULTS
smoke = False  # True: tiny zoo and 2 steps, for CI
figures_dir = "figures"  # outputs go to figures_dir/scale/name/
cache_dir = None  # None: ~/.cache/concrete_subspace/results, shared by the notebooks
precision = "fp32"  # fp32 or bf16 (autocast forward of the test-time methods; learned state stays fp32)
methods = (
    "concrete_task_arithmetic",
    "task_wise_adamerging",
    "layer_wise_adamerging",
    "task_wise_concrete_adamerging",
    "layer_wise_concrete_adamerging",
)
arch = "ViT-B-32"
checkpoints = None  # paper only: folder of the task_vectors open_clip checkpoints; None: Hub CLIP

# %%
import pandas as pd
from IPython.display import Markdown, display

from concrete_subspace import experiments as ex
from concrete_subspace import plotting as pl
from concrete_subspace import reference as ref

config, out, started = ex.setup("05_curves", globals())  # config from the parameters; offline, 1 thread, out/
config

# %%
curves, records = ex.run_curves(config)

# %%
# NBVAL_CHECK_OUTPUT
sorted(curves["stage"].unique())

# %%
published = ref.load_reference("curves_vit_b32") if config.scale == "paper" else None
fig = pl.curves_figure(curves, published=published, path=out / "curves", title="average accuracy along the runs")

# %% [markdown]
# Per task, for the layer-wise methods (mask meta-learning, then test-time adaptation):

# %%
for method, stage in [
    ("layer_wise_concrete_adamerging", "meta"),
    ("layer_wise_concrete_adamerging", "tta"),
    ("layer_wise_adamerging", "tta"),
]:
    if method in records:
        fig = pl.curves_per_task(curves, method, stage, path=out / f"{method}_{stage}")

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
meta

# %% [markdown]
# ## Which claims hold here?
# The paper's curves show (a) accuracy rising during mask meta-learning, (b) Concrete AdaMerging ending above
# AdaMerging at the same granularity. From the logged curves:

# %%
avg = curves[curves["task"] == "average"]
rows = []
for (method, stage), frame in avg.groupby(["method", "stage"], sort=False):
    frame = frame.sort_values("step")
    rows.append(
        {
            "method": method,
            "stage": stage,
            "first": frame["accuracy"].iloc[0],
            "last": frame["accuracy"].iloc[-1],
            "best": frame["accuracy"].max(),
            "gain": frame["accuracy"].iloc[-1] - frame["accuracy"].iloc[0],
        }
    )
progress_table = pd.DataFrame(rows)
final = {m: r.average for m, r in records.items()}
claims = ex.check_claims(final, ex.claims("task_wise_concrete_am_beats_am", "layer_wise_concrete_am_beats_am"))
meta_progress = progress_table[progress_table["stage"] == "meta"]
lines = [
    f"- mask meta-learning of {ex.pretty(m)} raises accuracy at w': **{'holds' if g > 0 else 'does NOT hold'}** "
    f"({g:+.1f})"
    for m, g in zip(meta_progress["method"], meta_progress["gain"])
]
for method, frame in meta.groupby("method", sort=False):  # the mask alone, at the initial coefficients
    frame = frame.sort_values("step")
    gain = frame["accuracy_at_init"].iloc[-1] - frame["accuracy_at_init"].iloc[0]
    lines.append(f"- the mask of {ex.pretty(method)} alone (at the initial w) along the meta stage: {gain:+.1f}")
lines += [
    f"- {c}: **{'holds' if h else 'does NOT hold'}** ({d:+.1f})"
    for c, d, h in zip(claims["claim"], claims["difference"], claims["holds"])
]
display(Markdown("\n".join(lines)))
progress_table

# %%
path = ex.write_outputs(
    config,
    "05_curves",
    {"curves": curves, "progress": progress_table, "claims": claims, "meta_stage": meta},
    started=started,
    runs=records.values(),
)
print("outputs written to", path.as_posix().split("figures/")[-1])
