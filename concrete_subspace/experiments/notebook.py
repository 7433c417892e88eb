"""The first cells of every notebook: :func:`defaults` gives the parameters cell its default values (the config
dataclass, the one place they are written) and :func:`setup` turns the parameters into a config and prepares the run
(offline at mini scale, CPU threads, output folder, status lines and the shared scale note shown in the notebook)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from ..status import show_status
from .configs import CONFIGS, BaseConfig, config_from, out_dir, set_threads
from .story import scale_note

OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


class Setup(NamedTuple):
    """What a notebook needs after its first cell: its config, its output folder and its start time (wall clock)."""

    config: BaseConfig
    out: Path
    started: float


def defaults(name: str) -> BaseConfig:
    """Notebook ``name``'s config with every field at its default: the values its parameters cell starts from.

    The parameters cell reads each default from here (``scale = defaults.scale``), so the defaults are written once,
    in :mod:`.configs`; papermill's injected cell, which runs after it, overrides any of them.
    """
    return CONFIGS[name]()


def show(markdown: str) -> None:
    """Render ``markdown`` in the notebook (the "What we see" paragraphs and claim verdicts)."""
    from IPython.display import Markdown, display

    display(Markdown(markdown))


def setup(name: str, namespace: Mapping[str, Any]) -> Setup:
    """Build notebook ``name``'s config from its variables (its parameters cell) and prepare the run.

    At mini scale the Hugging Face libraries are set offline (a hub call would hang ~1 min before failing); torch's
    CPU threads follow :func:`set_threads`; the output folder ``figures/<scale>[-smoke]/<name>/`` is created; pandas
    shows one decimal; the library's status lines are printed and the scale note (:func:`.story.scale_note`: what
    this scale's numbers are and are not comparable with) is shown.
    """
    config = config_from(CONFIGS[name], namespace)
    if config.scale == "mini":
        for key in OFFLINE_ENV:
            os.environ.setdefault(key, "1")
    set_threads(config)
    out = out_dir(config, name)
    out.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.precision", 1)
    show_status()
    show(scale_note(name, config.scale))
    return Setup(config, out, time.perf_counter())
