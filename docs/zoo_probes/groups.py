import json, sys, re
from dataclasses import replace
import numpy as np, torch
from transformers import CLIPModel
from concrete_subspace import zoo
from concrete_subspace.data import mini
from concrete_subspace.models.clip_hf import ImageEncoder, zero_shot_head
src, states, levels, lam = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
torch.set_num_threads(2)
for t, l in levels.items(): mini.TASKS[t] = replace(mini.TASKS[t], level=l)
cfg = zoo.mini_config()
clip = CLIPModel.from_pretrained(f"{src}/pretrained").eval()
tok = zoo.build_tokenizer(mini.vocabulary(), cfg.max_text_len)
heads = {t: zero_shot_head(clip, tok, mini.TASKS[t].classnames, mini.TASKS[t].templates) for t in cfg.tasks}
enc = ImageEncoder.from_clip(clip).eval().requires_grad_(False)
st = torch.load(states, weights_only=True); th = st["theta0"]
val = {t: tuple(torch.from_numpy(a) for a in mini.make_task_split(t, "validation", 0, replace(cfg.sizes, validation=300))) for t in cfg.tasks}
def avg(p): return np.mean([zoo._accuracy(zoo.predict_logits(enc, p, heads[t], val[t][0]), val[t][1]) for t in cfg.tasks])
def group(k):
    if "embeddings" in k: return "embed"
    if "layer_norm" in k or "layrnorm" in k or "layernorm" in k: return "ln"
    if "q_proj" in k or "k_proj" in k: return "qk"
    if "v_proj" in k or "out_proj" in k: return "vo"
    if "fc1" in k: return "fc1"
    if "fc2" in k: return "fc2"
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
