"""Run TA / CTA / LW-AM on a probe's states (validation split) to see whether entropy methods help."""
import json, sys, time
from dataclasses import replace
import numpy as np, torch
from transformers import CLIPModel
from concrete_subspace import zoo
from concrete_subspace.data import mini
from concrete_subspace.models.clip_hf import ImageEncoder, zero_shot_head, build_clip_problem
from concrete_subspace.merging import run_method
from concrete_subspace.evaluation import evaluate

src, states, levels = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
runs = json.loads(sys.argv[4])
torch.set_num_threads(1)
for t, l in levels.items():
    mini.TASKS[t] = replace(mini.TASKS[t], level=l)
cfg = zoo.mini_config()
clip = CLIPModel.from_pretrained(f"{src}/pretrained").eval()
tok = zoo.build_tokenizer(mini.vocabulary(), cfg.max_text_len)
heads = {t: zero_shot_head(clip, tok, mini.TASKS[t].classnames, mini.TASKS[t].templates) for t in cfg.tasks}
import os
if os.environ.get("HEAD_SCALE"):
    heads = {t: torch.nn.functional.normalize(h, dim=-1) * float(os.environ["HEAD_SCALE"]) for t, h in heads.items()}
enc = ImageEncoder.from_clip(clip).eval().requires_grad_(False)
st = torch.load(states, weights_only=True)
val = {t: tuple(torch.from_numpy(a) for a in mini.make_task_split(t, "validation", 0, cfg.sizes)) for t in cfg.tasks}
problem = build_clip_problem(enc, heads, lambda t: st["ft"][t], {t: v[0] for t, v in val.items()}, val, batch_size=16,
                             transform=zoo.to_pixel_values)
for name, params in runs:
    t0 = time.time()
    r = run_method(name, problem, **params)
    s = evaluate(problem, r.state)
    print(name, params, "avg", round(np.mean(list(s.values())), 1), {k: round(v, 1) for k, v in s.items()}, f"{time.time()-t0:.0f}s", flush=True)
    h = [x for x in r.history if "loss" in x]
    if h:
        L = [x["loss"] for x in h]; n = max(1, len(L) // 5)
        print("   loss windows", [round(float(np.mean(L[i:i + n])), 3) for i in range(0, len(L), n)], flush=True)
