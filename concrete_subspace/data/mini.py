"""Offline task data for the ``mini`` scale: two real bundled datasets and six procedural generators.

Every image is ``uint8`` RGB ``IMAGE_SIZE x IMAGE_SIZE``. Each task has a *clean* rendering (used, with
captions, to pre-train the mini CLIP, as the web images were for CLIP) and a *task* rendering (the task's own
distribution: clutter, colour casts, low contrast and pixel noise), on which the experts are fine-tuned and
everything is evaluated. All randomness comes from explicit ``numpy.random.Generator`` objects derived from
``(seed, task, split)``, so the same seed gives byte-identical data.

Tasks (paper analogue in brackets): mnist [MNIST], digits [SVHN], textures [DTD], landcover [EuroSAT],
signs [GTSRB], shapes [SUN397/Cars stand-in: object category], letters [glyph recognition], directions
[orientation]. Sources and licences: docs/zoo.md.

This module is the public face of the mini task data; the code lives in :mod:`concrete_subspace.data.mini_tasks`:

- :mod:`~.mini_tasks.drawing`: the canvas, anti-aliased shapes, smooth noise, colours, the task corruption
- :mod:`~.mini_tasks.real`: the bundled MNIST subset and UCI digits, and their renderers
- :mod:`~.mini_tasks.procedural`: the six procedural tasks' class names and renderers
- :mod:`~.mini_tasks.tasks`: :data:`TASKS` (class names, templates, captions, source, difficulty), :data:`LICENCES`
- :mod:`~.mini_tasks.splits`: :class:`SplitSizes`, the splits of the real data, :func:`make_task_split`
- :mod:`~.mini_tasks.pretraining`: :func:`make_pretraining_set`, :data:`GENERIC_CAPTIONS`, :func:`vocabulary`
"""

from __future__ import annotations

from ..seeding import derive_rng
from .mini_tasks.drawing import COLOURS, IMAGE_SIZE, corrupt
from .mini_tasks.pretraining import GENERIC_CAPTIONS, make_pretraining_set, vocabulary
from .mini_tasks.procedural import _PROCEDURAL, DIRECTIONS, LANDCOVER, LETTERS, SHAPES, SIGNS, TEXTURES
from .mini_tasks.real import _digits_arrays, _mnist_arrays
from .mini_tasks.splits import SplitSizes, _digits_sizes, _real_sizes, _real_split_indices, make_task_split
from .mini_tasks.tasks import LICENCES, NUMBER_WORDS, TASK_NAMES, TASKS, TaskSpec

__all__ = [  # the public names, then the private ones that tests and research scripts use
    "COLOURS",
    "DIRECTIONS",
    "GENERIC_CAPTIONS",
    "IMAGE_SIZE",
    "LANDCOVER",
    "LETTERS",
    "LICENCES",
    "NUMBER_WORDS",
    "SHAPES",
    "SIGNS",
    "SplitSizes",
    "TASKS",
    "TASK_NAMES",
    "TEXTURES",
    "TaskSpec",
    "annotations",
    "corrupt",
    "derive_rng",
    "make_pretraining_set",
    "make_task_split",
    "vocabulary",
    # private: the real data and its splits (tests/test_zoo.py), the renderers by task
    "_PROCEDURAL",
    "_digits_arrays",
    "_digits_sizes",
    "_mnist_arrays",
    "_real_sizes",
    "_real_split_indices",
]
