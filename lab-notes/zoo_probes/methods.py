"""Run merge methods of the registry on a probe's experts (validation split): do entropy methods help?

python methods.py ZOO PROBE.pt LEVELS_JSON '[["method", {params}], ...]'      (env: HEAD_SCALE as for the probe)
"""

import json
import sys
import time

import numpy as np
import torch
from common import setup, split

from concrete_subspace import zoo
from concrete_subspace.evaluation import evaluate
from concrete_subspace.models.clip_hf import build_clip_problem
from concrete_subspace.registry import run_method

src, states, runs = sys.argv[1], sys.argv[2], json.loads(sys.argv[4])
cfg, enc, _, heads = setup(src, sys.argv[3])
st = torch.load(states, weights_only=True)
val = {t: split(cfg, t, "validation") for t in cfg.tasks}
problem = build_clip_problem(
    enc,
    heads,
    lambda t: st["ft"][t],
    {t: v[0] for t, v in val.items()},
    val,
    batch_size=16,
    transform=zoo.to_pixel_values,
)
for name, params in runs:
    t0 = time.time()
    r = run_method(name, problem, **params)
    s = evaluate(problem, r.state)
    print(
        name,
        params,
        "avg",
        round(np.mean(list(s.values())), 1),
        {k: round(v, 1) for k, v in s.items()},
        f"{time.time() - t0:.0f}s",
        flush=True,
    )
    h = [x for x in r.history if "loss" in x]
    if h:
        L = [x["loss"] for x in h]
        n = max(1, len(L) // 5)
        print("   loss windows", [round(float(np.mean(L[i : i + n])), 3) for i in range(0, len(L), n)], flush=True)
