"""v1 zoo (as built): relative task-vector norm, mean cosine, own-task accuracy of theta0 + 0.3 tau (validation)."""

import numpy as np
import torch

from concrete_subspace import zoo

torch.set_num_threads(1)
Z = "/root/.cache/concrete_subspace/zoo/mini-v1-seed0"
p = zoo.load_zoo_problem(Z, split="validation")
th = p.pretrained
T = p.task_names
tau = {t: {k: p.load_finetuned(t)[k] - th[k] for k in th} for t in T}
flat = torch.stack([torch.cat([tau[t][k].flatten() for k in th]) for t in T])
n0 = float(torch.cat([v.flatten() for v in th.values()]).norm())
fn = torch.nn.functional.normalize(flat, dim=1)
cos = fn @ fn.T
print(
    "rel norm",
    round(float(flat.norm(dim=1).mean()) / n0, 4),
    "mean cos",
    round(float((cos.sum() - cos.trace()) / 56), 3),
)
from concrete_subspace.evaluation import evaluate

acc = []
for t in T:
    s = evaluate(p, {k: th[k] + 0.3 * tau[t][k] for k in th})
    acc.append(s[t])
print("single0.3 own", round(np.mean(acc), 1), [round(a, 1) for a in acc])
