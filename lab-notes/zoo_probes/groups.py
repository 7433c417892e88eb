"""Which parameter groups / layers carry the damage of task arithmetic? lam * sum(tau) applied to one group at a time.

python groups.py ZOO PROBE.pt LEVELS_JSON LAMBDA
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


def avg(p):
    return np.mean([zoo.top1_accuracy(zoo.predict_logits(enc, p, heads[t], val[t][0]), val[t][1]) for t in cfg.tasks])


def group(k):
    if "embeddings" in k:
        return "embed"
    if "layer_norm" in k or "layrnorm" in k or "layernorm" in k:
        return "ln"
    if "q_proj" in k or "k_proj" in k:
        return "qk"
    if "v_proj" in k or "out_proj" in k:
        return "vo"
    if "fc1" in k:
        return "fc1"
    if "fc2" in k:
        return "fc2"
    return "other"


S = {k: sum(st["ft"][t][k] - th[k] for t in cfg.tasks) for k in th}
print("zs", round(avg(th), 1), "TA all", round(avg({k: th[k] + lam * S[k] for k in th}), 1))
for g in ("embed", "ln", "qk", "vo", "fc1", "fc2", "other"):
    only = {k: th[k] + (lam * S[k] if group(k) == g else 0) for k in th}
    allbut = {k: th[k] + (lam * S[k] if group(k) != g else 0) for k in th}
    n = sum(th[k].numel() for k in th if group(k) == g)
    print(g, n, "only", round(avg(only), 1), "all-but", round(avg(allbut), 1), flush=True)
for layer in range(4):
    only = {k: th[k] + (lam * S[k] if f"layers.{layer}." in k else 0) for k in th}
    print("layer", layer, "only", round(avg(only), 1), flush=True)
