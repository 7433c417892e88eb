import json, sys
from dataclasses import replace
import numpy as np, torch
from transformers import CLIPModel
from concrete_subspace import zoo
from concrete_subspace.data import mini
from concrete_subspace.models.clip_hf import ImageEncoder, zero_shot_head
src, states, levels, lam = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
torch.set_num_threads(1)
for t, l in levels.items(): mini.TASKS[t] = replace(mini.TASKS[t], level=l)
cfg = zoo.mini_config()
clip = CLIPModel.from_pretrained(f"{src}/pretrained").eval()
tok = zoo.build_tokenizer(mini.vocabulary(), cfg.max_text_len)
heads = {t: zero_shot_head(clip, tok, mini.TASKS[t].classnames, mini.TASKS[t].templates) for t in cfg.tasks}
enc = ImageEncoder.from_clip(clip).eval().requires_grad_(False)
st = torch.load(states, weights_only=True); th = st["theta0"]
val = {t: tuple(torch.from_numpy(a) for a in mini.make_task_split(t, "validation", 0, replace(cfg.sizes, validation=300))) for t in cfg.tasks}
def acc(p, t): return zoo._accuracy(zoo.predict_logits(enc, p, heads[t], val[t][0]), val[t][1])
zs = {t: acc(th, t) for t in cfg.tasks}
print("zs", zs)
M = np.zeros((8, 8))
for i, s in enumerate(cfg.tasks):
    p = {k: th[k] + lam * (st["ft"][s][k] - th[k]) for k in th}
    for j, t in enumerate(cfg.tasks): M[i, j] = acc(p, t) - zs[t]
    print(s, np.round(M[i], 1), flush=True)
# per-parameter-group norms of tau
for s in cfg.tasks[:3]:
    g = {}
    for k in th:
        key = k.split(".")[2] if "layers" in k else k.split(".")[1]
        kind = "ln" if "norm" in k else ("bias" if k.endswith("bias") else "w")
        g[(key, kind)] = g.get((key, kind), 0) + float(((st["ft"][s][k] - th[k]) ** 2).sum())
    print(s, {f"{a}/{b}": round(v ** 0.5, 3) for (a, b), v in g.items()})
