"""Probe: fine-tune experts from a cached pretrained CLIP with given lr/steps, report TA curve on validation."""
import copy, json, sys, time
from dataclasses import replace
import numpy as np, torch
from transformers import CLIPModel
from concrete_subspace import zoo
from concrete_subspace.data import mini
from concrete_subspace.models.clip_hf import ImageEncoder, pretrained_state, zero_shot_head

src, lr, steps, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
torch.set_num_threads(1)
cfg = replace(zoo.mini_config(), finetune_lr=lr, finetune_steps=steps, **extra)
clip = CLIPModel.from_pretrained(f"{src}/pretrained").eval()
tok = zoo.build_tokenizer(mini.vocabulary(), cfg.max_text_len)
heads = {t: zero_shot_head(clip, tok, mini.TASKS[t].classnames, mini.TASKS[t].templates) for t in cfg.tasks}
enc = ImageEncoder.from_clip(clip).eval().requires_grad_(False)
theta0 = {k: v.clone() for k, v in pretrained_state(enc).items()}
data = {t: {s: zoo.load_task_split(src, t, s) for s in ("train", "validation")} for t in cfg.tasks}
t0 = time.time(); ft = {}
for i, t in enumerate(cfg.tasks):
    e = copy.deepcopy(enc); x, y = data[t]["train"]
    zoo.finetune(e, heads[t], x, y, cfg, i, t, progress=False)
    ft[t] = {k: v.detach().clone() for k, v in pretrained_state(e).items()}
print("finetune s", round(time.time() - t0))
def acc_ent(params, t):
    x, y = data[t]["validation"]; lg = zoo.predict_logits(enc, params, heads[t], x)
    lp = lg.log_softmax(-1); ent = float(-(lp.exp() * lp).sum(-1).mean())
    return zoo._accuracy(lg, y), ent
res = {"lr": lr, "steps": steps, "extra": extra}
res["zero_shot"] = {t: acc_ent(theta0, t) for t in cfg.tasks}
res["individual"] = {t: acc_ent(ft[t], t) for t in cfg.tasks}
tau = {t: {k: ft[t][k] - theta0[k] for k in theta0} for t in cfg.tasks}
norms = {t: float(torch.sqrt(sum((v ** 2).sum() for v in tau[t].values()))) for t in cfg.tasks}
n0 = float(torch.sqrt(sum((v ** 2).sum() for v in theta0.values())))
res["tau_norm_rel"] = {t: norms[t] / n0 for t in cfg.tasks}
# cosine between task vectors
flat = torch.stack([torch.cat([tau[t][k].flatten() for k in theta0]) for t in cfg.tasks]); fn = torch.nn.functional.normalize(flat, dim=1)
cos = fn @ fn.T; res["mean_cos"] = float((cos.sum() - cos.trace()) / (len(cfg.tasks) * (len(cfg.tasks) - 1)))
# single task vector scaled
res["single_0.3"] = {t: acc_ent({k: theta0[k] + 0.3 * tau[t][k] for k in theta0}, t) for t in cfg.tasks}
res["ta"] = {}
for lam in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0):
    p = {k: theta0[k] + lam * sum(tau[t][k] for t in cfg.tasks) for k in theta0}
    res["ta"][lam] = {t: acc_ent(p, t) for t in cfg.tasks}
def avg(d): return round(np.mean([v[0] for v in d.values()]), 1), round(np.mean([v[1] for v in d.values()]), 3)
print(json.dumps({"lr": lr, "steps": steps, "extra": extra, "zs": avg(res["zero_shot"]), "ind": avg(res["individual"]), "single0.3": avg(res["single_0.3"]),
                  "ta": {l: avg(d) for l, d in res["ta"].items()}, "norm": round(np.mean(list(res["tau_norm_rel"].values())), 4), "cos": round(res["mean_cos"], 3)}))
print("ind", {t: v[0] for t, v in res["individual"].items()})
print("ta0.3", {t: v[0] for t, v in res["ta"][0.3].items()})
json.dump(res, open(out, "w"), indent=1)
