"""The first cell of every notebook in one call: :func:`setup` turns the parameters cell into a config and prepares
the run (offline at mini scale, CPU threads, output folder, status lines shown in the notebook)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from ..status import show_status
from .configs import CONFIGS, BaseConfig, config_from, out_dir, set_threads

OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


class Setup(NamedTuple):
    """What a notebook needs after its first cell: its config, its output folder and its start time (wall clock)."""

    config: BaseConfig
    out: Path
    started: float


def setup(name: str, namespace: Mapping[str, Any]) -> Setup:
    """Build notebook ``name``'s config from its variables (its parameters cell) and prepare the run.

    At mini scale the Hugging Face libraries are set offline (a hub call would hang ~1 min before failing); torch's
    CPU threads follow :func:`set_threads`; the output folder ``figures/<scale>[-smoke]/<name>/`` is created; pandas
    shows one decimal; the library's status lines are printed in the notebook.
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
    return Setup(config, out, time.perf_counter())
