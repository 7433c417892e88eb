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
# One factor at a time, around the scale's default CTA run (Task Arithmetic beside it where it applies):
# - **temperature** λ of the Concrete samples;
# - **steps**: accuracy along the default run (exactly the accuracy of a shorter run: Adam without a schedule and an
#   evaluation mask seeded independently of the step count);
# - **λ_TA**: the fixed task-arithmetic coefficient (a fine sweep for TA, a few values for CTA);
# - **evaluation mask**: the learned logits evaluated with one continuous sample (paper), the expectation σ(x), a hard
#   threshold, or a Bernoulli draw — no re-training;
# - **number of tasks**: the first k tasks merged.
#
# **Scale.** At `scale="mini"` (default; offline, CPU) everything runs on the mini zoo (a small CLIP pre-trained here,
# fine-tuned on eight synthetic/real tasks; docs/zoo.md): every number is **ours** on that zoo, not comparable to the
# paper's. At `scale="paper"` the same ablations run on ViT-B/32; no published numbers are shown at either
# scale.

# %% tags=["parameters"]
# Parameters (papermill overrides these; names = fields of experiments.AblationConfig)
scale = "mini"  # mini: offline zoo on CPU; paper: Hub models on a GPU
device = "cpu"  # cpu or cuda
seed = 0
tasks = None  # None: all tasks of the scale
steps = None  # None: the scale defaults, at mini the zoo MINI_DEFAULTS
smoke = False  # True: tiny zoo and 2 steps, for CI
figures_dir = "figures"  # outputs go to figures_dir/scale/name/
cache_dir = None  # None: ~/.cache/concrete_subspace/results, shared by the notebooks
precision = "fp32"  # fp32 or bf16 (autocast forward of the test-time methods; learned state stays fp32)
temperatures = (0.2, 0.5, 1.0, 2.0)
scalings = (0.3, 0.5, 0.7)
ta_scalings = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
eval_masks = ("sample", "expected", "hard", "bernoulli")
task_counts = (2, 4, 6, 8)
arch = "ViT-B-32"
checkpoints = None  # paper only: folder of the task_vectors open_clip checkpoints; None: Hub CLIP

# %%
from IPython.display import Markdown, display

from concrete_subspace import experiments as ex
from concrete_subspace import plotting as pl

config, out, started = ex.setup("07_ablations", globals())  # config from the parameters; offline, 1 thread, out/
config

# %%
tables, records = ex.run_ablations(config)

# %%
# NBVAL_CHECK_OUTPUT
sorted(tables)

# %%
fig = pl.ablation_figure(tables, path=out / "ablations")

# %% [markdown]
# The average accuracy of each ablation (full per-task tables are in the CSV files):

# %%
for name, frame in tables.items():
    keys = [c for c in frame.columns if c not in ("method", "task", "accuracy", "stage")]
    avg = frame[frame["task"] == "average"]
    display(Markdown(f"**{name}**"))
    display(avg.pivot_table(index=keys, columns="method", values="accuracy", sort=False) if keys else avg)

# %% [markdown]
# ## Which observations of the paper hold here?
# The paper found λ = 0.5 a good temperature and CTA gaining over TA at every λ_TA and for more tasks. Computed:

# %%
lines = []
temp = tables["temperature"][tables["temperature"]["task"] == "average"]
if not temp.empty:
    best = temp.loc[temp["accuracy"].idxmax()]
    lines.append(
        f"- best temperature here: λ = {best['temperature']:g} ({best['accuracy']:.1f}); "
        f"λ = 0.5 is {'the best' if best['temperature'] == 0.5 else 'not the best'}"
    )
scal = tables["scaling"][tables["scaling"]["task"] == "average"]
for s in sorted(set(scal[scal["method"] == "concrete_task_arithmetic"]["scaling"])):
    pair = scal[scal["scaling"] == s].set_index("method")["accuracy"]
    if {"task_arithmetic", "concrete_task_arithmetic"} <= set(pair.index):
        d = pair["concrete_task_arithmetic"] - pair["task_arithmetic"]
        lines.append(f"- λ_TA = {s:g}: CTA vs TA {d:+.1f} → claim **{'holds' if d > 0 else 'does NOT hold'}**")
nt = tables["num_tasks"][tables["num_tasks"]["task"] == "average"]
for k in sorted(set(nt["num_tasks"])):
    pair = nt[nt["num_tasks"] == k].set_index("method")["accuracy"]
    d = pair["concrete_task_arithmetic"] - pair["task_arithmetic"]
    lines.append(f"- {k} tasks: CTA vs TA {d:+.1f} → claim **{'holds' if d > 0 else 'does NOT hold'}**")
display(Markdown("\n".join(lines)))

# %%
path = ex.write_outputs(config, "07_ablations", tables, started=started, runs=records.values())
print("outputs written to", path.as_posix().split("figures/")[-1])
