"""The offline ``mini`` model zoo: a small CLIP pre-trained here, fine-tuned on eight tasks, saved as HF directories.

Layout of a zoo directory (plain Hugging Face formats, so other merging libraries can load the same zoo)::

    pretrained/           CLIPModel (safetensors) + CLIPProcessor (image processor + word-level tokenizer)
    finetuned/<task>/     CLIPVisionModel fine-tuned on <task> against its frozen zero-shot head
    datasets/<task>/      datasets.DatasetDict (train / validation / test; uint8 "image" arrays, "label")
    manifest.json         written last, atomically: tasks, class names, templates, seeds, versions,
                          accuracies, entropy-premise statistics, merge-method results, build times

A directory is a complete zoo iff ``manifest.json`` exists with ``format_version == ZOO_FORMAT_VERSION``.
Everything is deterministic from the seed (explicit generators, deterministic kernels, fixed thread count).
Design notes and measured numbers: docs/zoo.md.

This module is the public face of the zoo; the code lives in :mod:`concrete_subspace.mini_zoo`, one module per
concern, in the order a build runs:

- :mod:`~.mini_zoo.config`: format constants, ``MINI_DEFAULTS`` (the merge methods' mini defaults),
  :class:`MiniConfig`, where zoos live
- :mod:`~.mini_zoo.determinism`: deterministic kernels, seeded module construction
- :mod:`~.mini_zoo.model`: tokenizer, processor, pixel values, CLIPConfig of the mini CLIP
- :mod:`~.mini_zoo.task_data`: the task splits (images from :mod:`concrete_subspace.data.mini`), saved and loaded
- :mod:`~.mini_zoo.train`: the pre-training and fine-tuning loops
- :mod:`~.mini_zoo.evaluate`: accuracy, entropy premise, geometry recorded in the manifest
- :mod:`~.mini_zoo.files`, :mod:`~.mini_zoo.manifest`: weights, atomic JSON, the manifest and a directory's state
- :mod:`~.mini_zoo.methods`: the manifest's merge-method results at ``MINI_DEFAULTS``
- :mod:`~.mini_zoo.build`: :func:`build_zoo`, every stage in order
- :mod:`~.mini_zoo.problem`: :func:`load_zoo_problem`, a built zoo as a MergeProblem
"""

from __future__ import annotations

from .mini_zoo.build import build_zoo
from .mini_zoo.config import (
    BUILD_THREADS,
    BUILDING_MARKER,
    MANIFEST,
    MINI_DEFAULTS,
    SPLITS,
    ZOO_FORMAT_VERSION,
    MiniConfig,
    default_zoo_dir,
    mini_config,
)
from .mini_zoo.determinism import deterministic
from .mini_zoo.evaluate import entropy_premise, evaluate_zoo, predict_logits, top1_accuracy
from .mini_zoo.files import atomic_write_json, load_vision_state, quiet_library_bars, save_vision_model
from .mini_zoo.manifest import read_manifest, zoo_manifest, zoo_state
from .mini_zoo.methods import update_method_results
from .mini_zoo.model import build_clip_config, build_processor, build_tokenizer, to_pixel_values
from .mini_zoo.problem import load_zoo_problem, select_tasks
from .mini_zoo.shared import seeded_init
from .mini_zoo.task_data import generate_task_data, load_task_split, save_task_datasets
from .mini_zoo.train import finetune, pretrain

__all__ = [
    "BUILDING_MARKER",
    "BUILD_THREADS",
    "MANIFEST",
    "MINI_DEFAULTS",
    "MiniConfig",
    "SPLITS",
    "ZOO_FORMAT_VERSION",
    "atomic_write_json",
    "build_clip_config",
    "build_processor",
    "build_tokenizer",
    "build_zoo",
    "default_zoo_dir",
    "deterministic",
    "entropy_premise",
    "evaluate_zoo",
    "finetune",
    "generate_task_data",
    "load_task_split",
    "load_vision_state",
    "load_zoo_problem",
    "mini_config",
    "predict_logits",
    "pretrain",
    "quiet_library_bars",
    "read_manifest",
    "save_task_datasets",
    "save_vision_model",
    "seeded_init",
    "select_tasks",
    "to_pixel_values",
    "top1_accuracy",
    "update_method_results",
    "zoo_manifest",
    "zoo_state",
]
