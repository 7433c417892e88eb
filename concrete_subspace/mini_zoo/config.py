"""Configuration of a mini zoo build: format constants, the merge methods' mini defaults, sizes and where zoos live."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import mini

# 2: zoo v2 (task-specific domains, stronger pre-training, small task vectors); 5: zoo v3 (v2 with four tasks shifted
# harder, data/shifts.py V3_SHIFTS; 3 and 4 were withdrawn builds, skipped so that their caches are never reused)
ZOO_FORMAT_VERSION = 5
MANIFEST = "manifest.json"
BUILDING_MARKER = ".zoo_building"  # present while a build writes into the directory
SPLITS = ("train", "validation", "test")
# Fixed intra-op threads (results depend on the reduction order); 1 is also fastest on a shared 2-core box.
BUILD_THREADS = 1

# Mini-scale defaults of the merge methods on zoo v3, chosen on the VALIDATION split of the seed-0 zoo (never on test).
# Task arithmetic and TIES: benchmarks/zoo_v2/probe.py (lab-notes/zoo_probes_v2/methods_v3.jsonl, docs/zoo.md "Zoo
# v3"): λ 0.3 (the paper's); TIES λ 0.5, density 0.3. Layer-wise AdaMerging: lr 1e-2 x 200 (66.0, 2 seeds) beat 3e-3 x
# 400 and 1e-3. The Concrete methods and task-wise AdaMerging (issue 26; every run in
# lab-notes/mask_protocol/probes_validation.jsonl, the table in docs/method.md §7a): Concrete TA's mask at 3e-2 x 400
# (65.9) beat 1e-2 x 400 (65.3) and 1e-2 x 800 (65.5); layer-wise Concrete AdaMerging with ONE inner step at lr 0.3
# (the paper's lr 1 drives w' to 0 or 1, a poor model at this scale, and the meta stage falls) and the mask at 1e-2 x
# 200 (66.8 / 66.2 at seeds 0 / 1, against layer-wise AdaMerging's 66.1 / 66.0); task-wise Concrete AdaMerging at inner
# lr 0.1, mask 3e-2 x 200, stage 2 at task-wise AdaMerging's lr (66.5; 66.4 at 1e-2); task-wise AdaMerging at the registry's lr 1e-3 x 200 (64.9), above 3e-3 (64.4) and 1e-2
# (63.2).
MINI_DEFAULTS: dict[str, dict[str, Any]] = {
    "task_arithmetic": {"scaling": 0.3},
    "ties_merging": {"scaling": 0.5, "density": 0.3},
    "concrete_task_arithmetic": {"scaling": 0.3, "lr": 1e-2, "steps": 400},
    "task_wise_adamerging": {"lr": 1e-3, "steps": 200},
    "layer_wise_adamerging": {"lr": 1e-2, "steps": 200},
    "task_wise_concrete_adamerging": {
        "inner_lr": 0.1,
        "outer_lr": 3e-2,
        "meta_steps": 200,
        "tta_lr": 1e-3,
        "tta_steps": 200,
    },
    "layer_wise_concrete_adamerging": {
        "inner_lr": 0.3,
        "outer_lr": 1e-2,
        "meta_steps": 200,
        "tta_lr": 1e-2,
        "tta_steps": 200,
    },
}

OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def use_offline_hub() -> None:
    """Set the Hugging Face libraries offline (where the user has not chosen): the mini zoos never need the Hub, and
    a Hub call without network hangs about a minute before failing. Called by the zoo builds and loaders, not on
    import."""
    for key in OFFLINE_ENV:
        os.environ.setdefault(key, "1")


@dataclass(frozen=True)
class MiniConfig:
    """Sizes and hyper-parameters of a mini zoo build (everything that changes the result)."""

    tasks: tuple[str, ...] = mini.TASK_NAMES
    sizes: mini.SplitSizes = mini.SplitSizes()
    pretrain_per_task: int = 8000  # v2: 2x v1's pairs and 4x its steps (stronger features, docs/zoo.md "Zoo v2")
    pretrain_steps: int = 4800
    pretrain_batch: int = 128
    pretrain_lr: float = 2e-3
    finetune_steps: int = 1400  # v2: lower lr, longer -> small task vectors (||tau|| / ||theta0|| ~ 0.06 vs v1's 0.20)
    finetune_batch: int = 32
    finetune_lr: float = 3e-4
    weight_decay: float = 0.05
    vision_hidden: int = 96
    vision_layers: int = 4
    vision_heads: int = 4
    vision_mlp: int = 384
    patch_size: int = 7
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    projection_dim: int = 64
    max_text_len: int = 16
    logit_scale_init: float = math.log(20.0)
    logit_scale_max: float = math.log(100.0)
    ta_scaling: float = 0.3
    method_steps: dict = field(default_factory=dict)  # overrides of merge-method steps (smoke builds)
    precision: str = "fp32"  # "bf16": pre-training and fine-tuning forwards under bf16 autocast (weights stay fp32)
    domain_shift: bool = True  # v2/v3: each task's images in its own domain (data/shifts.py), unseen in pre-training
    unnamed_classes: dict = field(default_factory=dict)  # v2: {task: class indices pre-training never shows}
    # v2 probe lever, off by default: {task: class indices shown in pre-training under a caption naming only the task}.
    # A third of the classes lowered zero-shot to 52.5 but made Concrete TA fall below task arithmetic (docs/zoo.md).
    generic_classes: dict = field(default_factory=dict)


def mini_config(smoke: bool = False, precision: str = "fp32") -> MiniConfig:
    """The full mini configuration, or a tiny one for CI (same code path, fewer images and steps)."""
    from ..loop import check_precision

    check_precision(precision)
    if not smoke:
        return MiniConfig(precision=precision)
    return MiniConfig(
        sizes=mini.SplitSizes(train=200, validation=60, test=100),
        pretrain_per_task=150,
        pretrain_steps=30,
        pretrain_batch=64,
        finetune_steps=12,
        finetune_batch=32,
        method_steps={"steps": 2, "meta_steps": 2, "tta_steps": 2},
        precision=precision,
    )


def default_zoo_dir(seed: int = 0, smoke: bool = False, precision: str = "fp32") -> Path:
    """Cache location of a zoo: $CONCRETE_SUBSPACE_CACHE/zoo/... or ~/.cache/concrete_subspace/zoo/... (outside git).

    A bf16-built zoo gets its own directory (suffix ``-bf16``); the fp32 zoo keeps the plain name.
    """
    root = os.environ.get("CONCRETE_SUBSPACE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "concrete_subspace"
    suffix = ("-smoke" if smoke else "") + ("" if precision == "fp32" else f"-{precision}")
    return base / "zoo" / f"mini-v{ZOO_FORMAT_VERSION}-seed{seed}{suffix}"
