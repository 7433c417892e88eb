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
# Merge only six "seen" tasks, then score the merged encoder on all eight: the two held-out tasks test whether the
# merge (and the learned mask) generalises beyond the tasks it was adapted on. Two splits, as in the paper: at paper
# scale exp1 holds out MNIST and EuroSAT, exp2 RESISC45 and SVHN; at mini scale the analogous mini tasks
# (`ex.MINI_GENERALIZATION_SPLITS`).
#
# **Scale.** At `scale="mini"` (default; offline, CPU) everything runs on the mini zoo (a small CLIP pre-trained here,
# fine-tuned on eight synthetic/real tasks; docs/zoo.md): every number is **ours** on that zoo, not comparable to the
# paper's. At `scale="paper"` it shows the seen/unseen averages with the published Table 5 numbers
# **beside** ours (ViT-B/32).

# %% tags=["parameters"]
# Parameters (papermill overrides these; names = fields of experiments.GeneralizationConfig)
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
    "task_arithmetic",
    "ties_merging",
    "concrete_task_arithmetic",
    "layer_wise_adamerging",
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

config, out, started = ex.setup("03_generalization", globals())  # config from the parameters; offline, 1 thread, out/
config

# %%
print("unseen tasks per split:", ex.generalization_splits(config))
table, records = ex.run_generalization(config)
summary = ex.generalization_summary(table)
summary

# %%
fig = pl.generalization_bars(summary, path=out / "seen_unseen", title="average accuracy on seen and unseen tasks")

# %% [markdown]
# ## Which claims of the paper hold here?
# The paper reports that Concrete TA beats Task Arithmetic on both seen and unseen tasks, and layer-wise Concrete
# AdaMerging beats layer-wise AdaMerging on the seen tasks. Checked per split, from the numbers above:

# %%
rows = []
for split, frame in summary.groupby("split", sort=False):
    for column in ("avg_seen", "avg_unseen"):
        averages = dict(zip(frame["method"], frame[column]))
        checked = ex.check_claims(
            averages, ex.claims("concrete_ta_beats_ta", "layer_wise_concrete_am_beats_am", "ties_beats_ta")
        )
        checked.insert(0, "tasks", column.removeprefix("avg_"))
        checked.insert(0, "split", split)
        rows.append(checked)
claims = pd.concat(rows, ignore_index=True)


def verdict(ok):
    return "holds" if ok else "does NOT hold"


display(
    Markdown(
        "\n".join(
            f"- {s}, {t} tasks: {c}: **{verdict(h)}** ({d:+.1f})"
            for s, t, c, d, h in zip(
                claims["split"], claims["tasks"], claims["claim"], claims["difference"], claims["holds"]
            )
        )
    )
)

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
