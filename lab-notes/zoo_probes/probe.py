"""Fine-tune the eight experts from the zoo's pre-trained model with one change; score the TA curve on validation.

    python probe.py ZOO LR STEPS OUT.json [LEVELS_JSON]      (env: OPT=sgd, HEAD_SCALE=100)

p_* were run with LEVELS '{}' (an earlier copy read the same validation images from the zoo's saved datasets),
q_* with the stronger levels of docs/zoo.md, s_* with OPT=sgd, h_* with HEAD_SCALE=100.
"""

import copy
import json
import sys
import time

import torch
from common import setup, split

from concrete_subspace import zoo
from concrete_subspace.models.clip_hf import pretrained_state

src, lr, steps, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cfg, enc, theta0, heads = setup(src, sys.argv[5] if len(sys.argv) > 5 else "{}", finetune_lr=lr, finetune_steps=steps)
data = {t: {s: split(cfg, t, s) for s in ("train", "validation")} for t in cfg.tasks}
t0 = time.time()
ft = {}
for i, t in enumerate(cfg.tasks):
    e = copy.deepcopy(enc)
    x, y = data[t]["train"]
    zoo.finetune(e, heads[t], x, y, cfg, i, t, progress=False)
    ft[t] = {k: v.detach().clone() for k, v in pretrained_state(e).items()}
print("finetune s", round(time.time() - t0), flush=True)


def acc_ent(params, t):
    x, y = data[t]["validation"]
    lg = zoo.predict_logits(enc, params, heads[t], x)
    lp = lg.log_softmax(-1)
    ent = float(-(lp.exp() * lp).sum(-1).mean())
    return zoo.top1_accuracy(lg, y), ent


res = {"lr": lr, "steps": steps, "levels": sys.argv[5] if len(sys.argv) > 5 else "{}"}
res["zero_shot"] = {t: acc_ent(theta0, t) for t in cfg.tasks}
res["individual"] = {t: acc_ent(ft[t], t) for t in cfg.tasks}
tau = {t: {k: ft[t][k] - theta0[k] for k in theta0} for t in cfg.tasks}
flat = torch.stack([torch.cat([tau[t][k].flatten() for k in theta0]) for t in cfg.tasks])
fn = torch.nn.functional.normalize(flat, dim=1)
cos = fn @ fn.T
res["mean_cos"] = float((cos.sum() - cos.trace()) / (len(cfg.tasks) * (len(cfg.tasks) - 1)))
n0 = float(torch.sqrt(sum((v**2).sum() for v in theta0.values())))
res["norm"] = float(flat.norm(dim=1).mean()) / n0
res["single_0.3"] = {t: acc_ent({k: theta0[k] + 0.3 * tau[t][k] for k in theta0}, t) for t in cfg.tasks}
res["ta"] = {}
for lam in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0):
    p = {k: theta0[k] + lam * sum(tau[t][k] for t in cfg.tasks) for k in theta0}
    res["ta"][lam] = {t: acc_ent(p, t) for t in cfg.tasks}
json.dump(res, open(out, "w"), indent=1)
torch.save({"theta0": theta0, "ft": ft}, out.replace(".json", ".pt"))
