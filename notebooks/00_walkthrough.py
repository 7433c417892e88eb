# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Concrete Subspace Learning, step by step
#
# *Runtime at the mini scale: 66 s in a cold `make figures` on the project's 2-core CPU (one torch
# thread, two notebooks at a time, 2026-12-06, the machine shared with other jobs); 121 s alone from an empty cache, whose Concrete TA run notebook 01 otherwise shares.*
#
# This notebook walks a reading group through the method of Tang et al., *Concrete Subspace Learning based
# Interference Elimination for Multi-task Model Fusion* (arXiv 2312.06173): task vectors, why merging them
# interferes, the Concrete (relaxed Bernoulli) mask and its temperature, then **one step of Concrete Task Arithmetic
# (CTA) and one bi-level step of Concrete AdaMerging derived by hand** from the formulas (plain torch: sampling,
# rescaling, merging, forward, entropy, gradient, Adam), each checked against one step of the library, then the
# project's executable specification (`concrete_subspace/spec.py`) beside the library, and finally a short CTA run.
#
# Every step prints or draws what it computed; after the figures that come from the run's own data, a short
# "What we see" paragraph states the measured numbers (written by `experiments/story.py` from this run, not typed).

# %%
import pandas as pd
import torch

from concrete_subspace import experiments as ex
from concrete_subspace import plotting as pl
from concrete_subspace.task_vectors import stack_task_vectors

defaults = ex.defaults("00_walkthrough")  # the defaults, written once: experiments.WalkthroughConfig

# %% tags=["parameters"]
# papermill overrides any of these (meanings: experiments.WalkthroughConfig)
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
temperatures = defaults.temperatures

# %% [markdown]
# Resolve the parameters into the notebook's config (a frozen dataclass), set the run up (offline at mini scale,
# one CPU thread, the output folder) and show what this scale's numbers can and cannot be compared with.

# %%
config, out, started = ex.setup("00_walkthrough", globals())  # config, offline, 1 thread, out/, scale note
config

# %% [markdown]
# ## 1. The merge problem
# A `MergeProblem` bundles the pre-trained encoder θ0 (the template module), a loader for each fine-tuned encoder θ_i
# (one at a time), each task's frozen zero-shot head, and the unlabeled test batches used at test time. At mini
# scale it is the zoo built by `concrete-subspace zoo build` (built here if missing).

# %%
problem = ex.problem_for(config)
print("tasks:", list(problem.task_names))
print(
    "merged tensors:",
    len(problem.pretrained),
    "| merged parameters:",
    sum(v.numel() for v in problem.pretrained.values()),
)

# %% [markdown]
# ## 2. Task vectors
# A task vector is what fine-tuning added: $\tau_i = \theta_i - \theta_0$. We stream the fine-tuned models one at a time into a
# [T, P] matrix (one row per task, all merged tensors flattened, in a fixed `ParamLayout`).

# %% tags=["derivation"]
layout, vectors = stack_task_vectors(problem.pretrained, problem.load_finetuned, problem.task_names)
theta0 = layout.flatten(problem.pretrained)
norms = pd.Series(vectors.norm(dim=1).cpu().numpy(), index=problem.task_names, name="norm of task vector")
print("task-vector matrix:", tuple(vectors.shape))
norms.to_frame()

# %% [markdown]
# ## 3. Interference
# Summing task vectors mixes updates that disagree. Two visible symptoms: **sign conflicts** (for a parameter, one task
# pushes it up and another pushes it down) and **magnitude imbalance** (one task's update dominates the sum). The left
# panel shows, for each pair of tasks, the fraction of parameters whose updates have opposite signs.

# %%
signs = torch.sign(vectors)
T = len(problem.task_names)
conflicts = pd.DataFrame(
    [[float(((signs[i] * signs[j]) < 0).float().mean()) for j in range(T)] for i in range(T)],
    index=problem.task_names,
    columns=problem.task_names,
)
fig = pl.interference_figure(conflicts, norms, path=out / "interference")

# %%
# What we see: written from this run's task vectors (experiments/story.py)
ex.show(ex.story.interference_story(conflicts, norms, config.scale))

# %% [markdown]
# Task Arithmetic merges with one coefficient: $\theta = \theta_0 + \lambda_{TA} \sum_i \tau_i$
# ($\lambda_{TA} = 0.3$ in the paper). Against the individual models and the zero-shot model it shows the
# interference gap the method tries to close:

# %%
cache = ex.cache_root(config)
rows = ex.reference_rows(problem, cache_dir=cache)
ta = ex.run_cached(problem, "task_arithmetic", ex.method_params("task_arithmetic", scale=config.scale), cache_dir=cache)
gap = pd.concat(
    [
        ex.tidy_scores("zero_shot", rows["zero_shot"]),
        ex.tidy_scores("task_arithmetic", ta.scores),
        ex.tidy_scores("individual", rows["individual"]),
    ]
)
ex.wide(gap)

# %%
# What we see: written from this run's table (experiments/story.py); published numbers as context only
ex.show(ex.story.gap_story(gap, config.scale, ex.story.published_averages("clip_vit_b32_8tasks")))

# %% [markdown]
# ## 4. The Concrete distribution and its temperature
# The method learns ONE mask shared by all tasks, one logit $x_j$ per merged parameter $j$. A binary mask is not
# differentiable, so it samples the *binary Concrete* (relaxed Bernoulli) distribution instead:
# $$m_j = \sigma\!\left(\frac{\log u_j - \log(1 - u_j) + x_j}{\lambda}\right), \qquad u_j \sim \mathcal U(0, 1),$$
# a continuous value in $(0, 1)$ that is differentiable in $x_j$ (the noise $u$ does not depend on $x$). The
# temperature $\lambda$ sets how close samples are to 0 or 1; the curves $\sigma(x/\lambda)$ below are the paper's
# temperature figure.

# %%
fig = pl.temperature_figure(config.temperatures, path=out / "temperature")

# %% [markdown]
# **What we see.** These curves are the formula, not a measurement: each shows the keep value $\sigma(x/\lambda)$
# of a noise-free sample ($u = 0.5$) as the logit $x$ moves. At a low temperature the curve is almost a step, so a
# sample is nearly a hard 0/1 mask and its gradient is concentrated near $x = 0$; at a high temperature the curve
# is flat, samples stay near 0.5 and the mask barely masks. The paper uses $\lambda = 0.5$, between the two
# (notebook 07 varies it on the real runs).

# %% [markdown]
# ## 5. Sampling a mask, and rescaling it
# The function below is the formula above, written out: draw $u$ from an explicit `torch.Generator` (so every cell is
# reproducible), keep it away from 0 and 1 so the logs stay finite, and keep the sample strictly inside $(0, 1)$.
# Logits start at $x = 0$ (keep probability $\sigma(0) = 0.5$).
#
# Masking removes about half of each task vector, which would shrink the update. The paper divides the mask of each
# parameter tensor $k$ by its mean, $\tilde m = m / \overline{m}_k$ (mean over the tensor's elements), so every tensor
# keeps its expected scale: after rescaling, each tensor's mask has mean exactly 1. `layout.numels` lists how many
# elements each tensor has in the flat vector.

# %% tags=["derivation"]
temperature = 0.5


def concrete_sample(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """m = σ((log u − log(1 − u) + x) / λ) with u ~ U(0, 1), u clamped away from 0 and 1."""
    eps = torch.finfo(x.dtype).eps
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype).clamp(eps, 1 - eps)
    m = torch.sigmoid((torch.log(u) - torch.log1p(-u) + x) / temperature)
    return m.clamp(torch.finfo(x.dtype).tiny, 1 - eps)  # strictly inside (0, 1) where σ rounds to 0 or 1


def rescale_per_tensor(m: torch.Tensor) -> torch.Tensor:
    """m / mean(m), the mean taken over each parameter tensor's elements."""
    return torch.cat([part / part.mean() for part in m.split(layout.numels)])


generator = torch.Generator(device=theta0.device).manual_seed(config.run_seed)
mask = concrete_sample(torch.zeros_like(theta0), generator)
print(
    f"sample: min {mask.min():.3f}, max {mask.max():.3f}, mean {mask.mean():.3f}, "
    f"fraction > 0.5: {(mask > 0.5).float().mean():.3f}"
)
means = torch.stack([part.mean() for part in rescale_per_tensor(mask).split(layout.numels)])
print(f"per-tensor means after rescaling: min {means.min():.6f}, max {means.max():.6f} over {len(means)} tensors")

# %% [markdown]
# ## 6. One step of Concrete Task Arithmetic, by hand
# CTA keeps the task-arithmetic coefficient $\lambda_{TA} = 0.3$ fixed and learns only the mask logits $x$. One step:
#
# 1. draw a mask $m$ from $x$ (section 5) and rescale it per tensor: $\tilde m$;
# 2. merge: $\theta = \theta_0 + \lambda_{TA} \sum_i \tau_i \odot \tilde m$ (one mask for all tasks; since
#    $\lambda_{TA}$ is fixed, $\lambda_{TA}\sum_i \tau_i$ is computed once);
# 3. forward one unlabeled test batch of each task $t$ through the merged encoder and that task's frozen head:
#    logits $z$, probabilities $p = \operatorname{softmax}(z)$;
# 4. loss: the batch-mean prediction entropy, summed over tasks,
#    $\;\mathcal L(x) = \sum_t \frac{1}{|B_t|} \sum_{b \in B_t} -\sum_c p_{bc} \log p_{bc}$;
# 5. gradient $g = \nabla_x \mathcal L$ by backpropagation through the forward, the merge and the sample;
# 6. Adam step (lr $\eta = 10^{-3}$, $\beta = (0.9, 0.999)$, $\epsilon = 10^{-8}$; at step 1 the moments start at 0):
#    $\mu = (1 - \beta_1) g$, $\nu = (1 - \beta_2) g^2$, $\hat\mu = \mu / (1 - \beta_1)$,
#    $\hat\nu = \nu / (1 - \beta_2)$, $\;x \leftarrow x - \eta\, \hat\mu / (\sqrt{\hat\nu} + \epsilon)$.
#
# Then the library's `concrete_task_arithmetic`, run for one step with the same seed, must give the same loss and the
# same logits. "The same" up to float rounding: the library computes the same quantities in another order (all tasks
# in one batched forward; a fused rescale-and-merge with its own backward). Most per-element gradients here are about
# $10^{-8}$, the size of Adam's $\epsilon$, where a change of $g$ in its last bits still moves the step $\eta\,
# g/(|g| + \epsilon)$ a little, so the logits are compared to within 5% of one step ($0.05\,\eta$; another seed's
# sample differs by whole steps).

# %% tags=["derivation"]
from torch.func import functional_call

from concrete_subspace.registry import run_method

scaling, lr, betas, adam_eps = 0.3, 1e-3, (0.9, 0.999), 1e-8


def summed_entropy(merged_flat: torch.Tensor, data_step: int) -> torch.Tensor:
    """Σ_t batch-mean entropy of task t's predictions with the merged encoder (batch ``data_step`` of each task)."""
    merged = layout.unflatten(merged_flat)  # flat vector -> named parameter tensors
    loss = 0.0
    for task in problem.task_names:
        features = functional_call(problem.model, merged, (problem.unlabeled_batch(task, data_step),))
        log_p = problem.task_logits(task, features).float().log_softmax(-1)
        loss = loss + (-(log_p.exp() * log_p).sum(-1)).mean()
    return loss


def adam_first_step(param: torch.Tensor, grad: torch.Tensor, lr: float) -> torch.Tensor:
    """The first Adam step from zero moments: x − lr · μ̂ / (√ν̂ + ε)."""
    mu, nu = (1 - betas[0]) * grad, (1 - betas[1]) * grad * grad
    mu_hat, nu_hat = mu / (1 - betas[0]), nu / (1 - betas[1])
    return param - lr * mu_hat / (nu_hat.sqrt() + adam_eps)


generator = torch.Generator(device=theta0.device).manual_seed(config.run_seed)  # the run's generator, fresh
x = torch.zeros_like(theta0, requires_grad=True)  # 1. logits, keep probability 0.5
m = rescale_per_tensor(concrete_sample(x, generator))  #    a sample, rescaled per tensor
summed = sum(scaling * tau for tau in vectors)  # 2. λ Σ_i τ_i
loss = summed_entropy(theta0 + summed * m, data_step=0)  # 3.-4. forward, summed entropy
loss.backward()  # 5. g = ∂L/∂x
x_cta = adam_first_step(x.detach(), x.grad, lr)  # 6. Adam
print(
    f"summed entropy {loss.item():.4f}; gradient norm {x.grad.norm():.3g}; logits moved by at most "
    f"{(x_cta - x.detach()).abs().max():.2e}"
)

library = run_method(
    "concrete_task_arithmetic",
    problem,
    steps=1,
    scaling=scaling,
    temperature=temperature,
    lr=lr,
    seed=config.run_seed,
    progress=False,
)
tolerance = 0.05 * lr  # 5% of one Adam step (see above)
cta_matches = (
    torch.allclose(library.extras["mask_logits"], x_cta.cpu(), rtol=0, atol=tolerance)
    and abs(library.history[0]["loss"] - loss.item()) < 1e-4
)

# %%
# NBVAL_CHECK_OUTPUT
print("library CTA step == hand-derived step:", cta_matches)

# %% [markdown]
# ## 7. One bi-level step of Concrete AdaMerging, by hand
# Concrete AdaMerging learns the mask *around* AdaMerging: the merge coefficients $w$ (task-wise here, $w \in \mathbb
# R^T$; layer-wise: one per task and tensor) are adapted by entropy minimisation too, and the mask is meta-learned so
# that **one** adaptation step of $w$ under the mask works well. One meta-learning step (the paper's code, first
# order):
#
# ```
#  logits x ──sample──► m ──────────────┐ (m held constant)
#                                        ▼
#  w ← w0 = 0.3 ─► θ(w, m) = θ0 + Σ_i clamp(w_i, 0, 1) τ_i ⊙ m̃ ─► L_inner(w) ─► ONE Adam step on w (lr 1) ─► w'
#                                                                                                             │
#  logits x ──sample──► m' (a NEW sample, differentiable in x)                                               │
#                        ▼                                                                        (w' constant)▼
#                 θ(w', m') = θ0 + Σ_i clamp(w'_i, 0, 1) τ_i ⊙ m̃' ─► L_outer(x) ─► ONE Adam step on x (lr 1e-3)
# ```
#
# Inner step: $w' = \mathrm{Adam}_{\eta=1}\big(w_0, \nabla_w \mathcal L(\theta(w_0, m))\big)$, with the mask sample
# $m$ treated as a constant. Outer step: $x \leftarrow \mathrm{Adam}_{\eta=10^{-3}}\big(x, \nabla_x \mathcal
# L(\theta(w', m'))\big)$ with $w'$ treated as a constant (first order: no gradient through the inner step). The two
# losses use consecutive test batches (data steps $2s$ and $2s + 1$ at meta step $s$). Compared with the library as in section 6. After the meta-learning stage,
# the mask is frozen (one sample is drawn and kept) and $w$ is adapted for many steps, as in AdaMerging.

# %% tags=["derivation"]
inner_lr, init = 1.0, 0.3
generator = torch.Generator(device=theta0.device).manual_seed(config.run_seed)
x = torch.zeros_like(theta0, requires_grad=True)
w = torch.full((len(vectors),), init, device=theta0.device, requires_grad=True)  # w reset to w0

m = rescale_per_tensor(concrete_sample(x, generator)).detach()  # inner: the mask is a constant
inner_loss = summed_entropy(theta0 + (w.clamp(0, 1) @ vectors) * m, data_step=0)
inner_loss.backward()
w_adapted = adam_first_step(w.detach(), w.grad, inner_lr)  # ONE inner Adam step on w

m_new = rescale_per_tensor(concrete_sample(x, generator))  # outer: a new sample
outer_loss = summed_entropy(theta0 + (w_adapted.clamp(0, 1) @ vectors) * m_new, data_step=1)
outer_loss.backward()
x_cam = adam_first_step(x.detach(), x.grad, lr)  # ONE outer Adam step on x
print(
    f"inner entropy {inner_loss.item():.4f} -> adapted w {[round(v, 3) for v in w_adapted.tolist()]}; "
    f"outer entropy {outer_loss.item():.4f}"
)

library = run_method(
    "task_wise_concrete_adamerging",
    problem,
    meta_steps=1,
    tta_steps=0,
    init=init,
    inner_lr=inner_lr,
    outer_lr=lr,
    temperature=temperature,
    seed=config.run_seed,
    progress=False,
)
meta_row = next(row for row in library.history if row.get("stage") == "meta")
cam_matches = (
    torch.allclose(library.extras["mask_logits"], x_cam.cpu(), rtol=0, atol=tolerance)
    and abs(meta_row["inner_loss"] - inner_loss.item()) < 1e-4
    and abs(meta_row["loss"] - outer_loss.item()) < 1e-4
)

# %%
# NBVAL_CHECK_OUTPUT
print("library Concrete AdaMerging step == hand-derived step:", cam_matches)

# %% [markdown]
# ## 8. The executable specification
# `concrete_subspace/spec.py` states every method of this notebook as plain code on state dicts, one small function
# per formula of docs/method.md (no flat buffers, no fused backward, no checkpoints): it is what the library's fast
# code is tested against, for every method and option (tests/test_spec.py). Two steps of its Concrete TA beside two
# steps of the library's, same seed: the logits must agree to within the tolerance of section 6, and the merged
# weights to within $10^{-5}$.

# %%
from concrete_subspace import spec

cta_settings = {"steps": 2, "scaling": scaling, "temperature": temperature, "lr": lr, "seed": config.run_seed}
plain = spec.concrete_task_arithmetic(problem, **cta_settings)
fast = run_method("concrete_task_arithmetic", problem, **cta_settings, progress=False)
plain_logits = torch.cat([x.reshape(-1) for x in plain.mask_logits.values()]).cpu()
logit_gap = float((fast.extras["mask_logits"] - plain_logits).abs().max())
weight_gap = max(float((fast.state[k] - plain.state[k]).abs().max()) for k in plain.state)
print(f"largest difference: logits {logit_gap:.1e} (tolerance {tolerance:.0e}), merged weights {weight_gap:.1e}")
spec_matches = logit_gap <= tolerance and weight_gap <= 1e-5

# %%
# NBVAL_CHECK_OUTPUT
print("library CTA == executable specification (2 steps):", spec_matches)

# %% [markdown]
# ## 9. The full run
# Now the full CTA run with the scale's defaults (mini: the zoo's validation-chosen step count). Runs are cached on
# disk keyed by everything that changes their result, so the other notebooks reuse this one. The curve shows the
# summed entropy (the loss) and the average test accuracy along the run; accuracy is read off the history that the
# run logs every `eval_every` steps.

# %%
cta = ex.run_cached(
    problem,
    "concrete_task_arithmetic",
    ex.method_params(
        "concrete_task_arithmetic",
        scale=config.scale,
        steps=config.steps,
        smoke=config.smoke,
        precision=config.precision,
    ),
    cache_dir=cache,
)
history = pd.DataFrame(cta.history)
fig = pl.cta_run_figure(history, ta.average, ta.params["scaling"], cta.params["scaling"], path=out / "cta_run")
summary = pd.concat([gap, ex.tidy_scores("concrete_task_arithmetic", cta.scores)])
ex.wide(summary)

# %%
# What we see: written from this run's history and scores (experiments/story.py)
ex.show(ex.story.cta_run_story(history, ta.average, cta.average, config.scale))

# %% [markdown]
# Save the tables and the results JSON (parameters, zoo and run seeds, versions, device, wall time).

# %%
path = ex.write_outputs(
    config,
    "00_walkthrough",
    {"summary": summary, "interference": conflicts.reset_index(names="task")},
    started=started,
    runs=[ta, cta],
)
print("outputs written to", path.as_posix().split("figures/")[-1])
