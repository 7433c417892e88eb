"""Configuration of a mini-text zoo build: format constants, the merge methods' defaults on it, where zoos live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import text as text_data

TEXT_ZOO_FORMAT_VERSION = 2  # 2: LoRA adapters saved and shipped, files and data hashed


SCALE = "mini-text"


BUILDING_MARKER = ".zoo_building"


SPLITS = ("train", "validation", "test")


FINETUNE_KINDS = ("lora", "full")


# Defaults of the merge methods on this zoo, chosen on the VALIDATION split of the seed-0 zoo by
# benchmarks/text_sweep.py (rows: docs/zoo_text_sweep.csv; table: docs/zoo_text.md). λ = 0.2: the best task-arithmetic
# λ (62.2 vs 60.2 at the paper's 0.3); Concrete TA uses the same λ so that it is compared with task arithmetic at
# equal scaling. TIES: best of λ {0.2, 0.3, 0.5} x density {0.2, 0.5}. Concrete TA: lr 1e-2 x 20 (62.4; 1e-3 62.2,
# 40 steps 62.4). Layer-wise AdaMerging: lr 3e-2 x 60 (67.0; 1e-3 x 20 61.2, 1e-2 x 30 65.5, 3e-2 x 30 66.2).
# Concrete AdaMerging: 10 meta steps at outer lr 1e-3, then the TTA stage at lr 3e-2 x 40 (66.5; at the paper's
# 1e-3 x 20, 60.3). Step counts are capped by notebook 02's 15-minute budget.
TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "task_arithmetic": {"scaling": 0.2},
    "ties_merging": {"scaling": 0.2, "density": 0.5},
    "concrete_task_arithmetic": {"scaling": 0.2, "lr": 1e-2, "steps": 20},
    "layer_wise_adamerging": {"lr": 3e-2, "steps": 60},
    "layer_wise_concrete_adamerging": {"outer_lr": 1e-3, "meta_steps": 10, "tta_lr": 3e-2, "tta_steps": 40},
}


TEXT_FALLBACK_STEPS: dict[str, int] = {
    "steps": 50,
    "meta_steps": 30,
    "tta_steps": 50,
}  # methods without a default above


@dataclass(frozen=True)
class TextZooConfig:
    """Everything that changes a mini-text build's result."""

    tasks: tuple[str, ...] = text_data.TASK_NAMES
    per_class: int | None = None  # None: each task's own per_class (data/text.py)
    finetune: str = "lora"  # 'lora' (LoRA on target_modules, merged) | 'full' (every BERT weight)
    lora_r: int = 16
    lora_alpha: int = 32
    target_modules: tuple[str, ...] = ("query", "value")
    steps: int = 120
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.0
    max_length: int = 32  # tokens; each task pads to min(max_length, its longest text)
    logit_scale: float = 100.0  # CLIP's; multiplies the normalised prompt embeddings
    ta_scaling: float = 0.3
    # bf16 autocast for fine-tuning; off: on this project's AMD EPYC CPU it was 12x SLOWER (docs/zoo_text.md)
    bf16: bool = False
    random_encoder: dict | None = None  # smoke: BertConfig fields of a tiny random encoder (same tokenizer)


def text_zoo_config(smoke: bool = False) -> TextZooConfig:
    """The full mini-text configuration, or the CI one: a tiny random BERT, 20 examples per class, 6 steps."""
    if not smoke:
        return TextZooConfig()
    return TextZooConfig(
        per_class=20,
        steps=6,
        batch=16,
        lr=1e-2,
        max_length=16,
        random_encoder={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
        },
    )


def default_text_zoo_dir(seed: int = 0, smoke: bool = False) -> Path:
    """$CONCRETE_SUBSPACE_CACHE/zoo/mini-text-v2-seed0[-smoke] (or under ~/.cache/concrete_subspace)."""
    root = os.environ.get("CONCRETE_SUBSPACE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "concrete_subspace"
    return base / "zoo" / f"{SCALE}-v{TEXT_ZOO_FORMAT_VERSION}-seed{seed}{'-smoke' if smoke else ''}"
