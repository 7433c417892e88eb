"""Cross-task effect of one expert: accuracy change on every task of theta0 + lam * tau_s vs zero-shot.

python cross.py ZOO PROBE.pt LEVELS_JSON LAMBDA
"""

import sys

import numpy as np
import torch
from common import setup, split

from concrete_subspace import zoo

src, states, lam = sys.argv[1], sys.argv[2], float(sys.argv[4])
cfg, enc, _, heads = setup(src, sys.argv[3])
st = torch.load(states, weights_only=True)
th = st["theta0"]
val = {t: split(cfg, t, "validation", 300) for t in cfg.tasks}


def acc(p, t):
    return zoo.top1_accuracy(zoo.predict_logits(enc, p, heads[t], val[t][0]), val[t][1])


zs = {t: acc(th, t) for t in cfg.tasks}
print("zs", zs)
M = np.zeros((8, 8))
for i, s in enumerate(cfg.tasks):
    p = {k: th[k] + lam * (st["ft"][s][k] - th[k]) for k in th}
    for j, t in enumerate(cfg.tasks):
        M[i, j] = acc(p, t) - zs[t]
    print(s, np.round(M[i], 1), flush=True)
# per-parameter-group norms of tau
for s in cfg.tasks[:3]:
    g = {}
    for k in th:
        key = k.split(".")[2] if "layers" in k else k.split(".")[1]
        kind = "ln" if "norm" in k else ("bias" if k.endswith("bias") else "w")
        g[(key, kind)] = g.get((key, kind), 0) + float(((st["ft"][s][k] - th[k]) ** 2).sum())
    print(s, {f"{a}/{b}": round(v**0.5, 3) for (a, b), v in g.items()})
