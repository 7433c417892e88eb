"""`make figures` schedules the zoo builds and notebooks (dry runs of notebooks.mk: `make -n` runs nothing)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def dry_run(*args: str) -> str:
    """The commands `make -n ARGS` would run, with the install stamp taken as up to date."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k != "MFLAGS"}
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "-o", ".venv/.installed", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def jobs(text: str) -> list[str]:
    """Job names in the order make would start them (from each job's 'NAME: started' line)."""
    return re.findall(r'echo "([\w-]+): started', text)


def test_figures_runs_the_zoos_first_and_05_06_after_01():
    text = dry_run("figures")
    assert "-j2 FIG_SCHEDULE=1 figures-all" in text
    order = jobs(text)
    notebooks = ["00_walkthrough", "01_multitask_table", "02_flan_t5_glue", "03_generalization", "04_robustness"]
    notebooks += ["05_curves", "06_mask_analysis", "07_ablations"]
    assert sorted(order) == sorted(["zoo-image", "zoo-text", *notebooks])
    assert order.index("zoo-text") < order.index("02_flan_t5_glue")
    for name in notebooks:
        if name != "02_flan_t5_glue":
            assert order.index("zoo-image") < order.index(name), name
    assert order.index("01_multitask_table") < min(order.index("05_curves"), order.index("06_mask_analysis"))
    assert "notebooks/executed/logs/01_multitask_table.log" in text and "--no-progress-bar" in text


def test_one_notebook_builds_only_its_zoo_and_prints_to_the_terminal():
    assert jobs(dry_run("fig-05_curves")) == ["zoo-image", "05_curves"]  # 01 runs only inside `make figures`
    text = dry_run("fig-02_flan_t5_glue")
    assert jobs(text) == ["zoo-text", "02_flan_t5_glue"] and "> notebooks/executed/logs" not in text


def test_paper_scale_runs_one_job_at_a_time():
    assert "-j1 FIG_SCHEDULE=1" in dry_run("figures", "SCALE=paper", "DEVICE=cuda")
    assert "-j3 FIG_SCHEDULE=1" in dry_run("figures", "FIG_JOBS=3")


def test_zoo_seed_picks_the_zoos_and_run_seed_the_runs():
    text = dry_run("fig-02_flan_t5_glue", "ZOO_SEED=3", "RUN_SEED=5")
    assert "zoo build --scale mini-text --seed 3" in text
    assert "-p zoo_seed 3 -p run_seed 5" in text and "-p seed " not in text
    assert "zoo build --seed 3" in dry_run("fig-05_curves", "ZOO_SEED=3")


def test_the_old_seed_variable_is_refused():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k != "MFLAGS"}
    out = subprocess.run(["make", "-n", "fig-05_curves", "SEED=1"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "ZOO_SEED" in out.stderr and "RUN_SEED" in out.stderr
