"""Shared setup of the probe scripts: the zoo's pre-trained encoder, zero-shot heads, task data at given levels."""

import json
import os
from dataclasses import replace

import torch
from transformers import CLIPModel

from concrete_subspace import zoo
from concrete_subspace.data import mini
from concrete_subspace.models.clip_hf import ImageEncoder, pretrained_state, zero_shot_head


def setup(src: str, levels_json: str = "{}", **config_overrides):
    """(cfg, encoder, theta0, heads) from the zoo at ``src``; corruption levels and HEAD_SCALE / OPT from the env applied."""
    torch.set_num_threads(1)
    if os.environ.get("OPT") == "sgd":  # probe3 / s_*: SGD with momentum instead of AdamW inside zoo.finetune
        torch.optim.AdamW = lambda params, lr, weight_decay: torch.optim.SGD(params, lr=lr, momentum=0.9)
    for task, level in json.loads(levels_json).items():
        mini.TASKS[task] = replace(mini.TASKS[task], level=level)
    cfg = replace(zoo.mini_config(), **config_overrides)
    clip = CLIPModel.from_pretrained(f"{src}/pretrained").eval()
    tok = zoo.build_tokenizer(mini.vocabulary(), cfg.max_text_len)
    heads = {t: zero_shot_head(clip, tok, mini.TASKS[t].classnames, mini.TASKS[t].templates) for t in cfg.tasks}
    if os.environ.get("HEAD_SCALE"):  # probe4 / h_*: heads at another logit scale (argmax unchanged)
        heads = {
            t: torch.nn.functional.normalize(h, dim=-1) * float(os.environ["HEAD_SCALE"]) for t, h in heads.items()
        }
    enc = ImageEncoder.from_clip(clip).eval().requires_grad_(False)
    theta0 = {k: v.clone() for k, v in pretrained_state(enc).items()}
    return cfg, enc, theta0, heads


def split(cfg, task: str, name: str, n: int | None = None):
    """(uint8 images, labels) of one task split, regenerated at the current corruption levels."""
    sizes = replace(cfg.sizes, validation=n) if n else cfg.sizes
    return tuple(torch.from_numpy(a) for a in mini.make_task_split(task, name, 0, sizes))
