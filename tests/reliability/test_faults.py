"""Interrupted runs lose nothing: resume from the last checkpoint ≡ an uninterrupted run, in-process and after real kills.

In-process, a crash is an exception raised from the data source after a chosen number of batches; the same call is
then repeated with the same ``checkpoint_dir``. Out of process, a Concrete AdaMerging job on the toy problem
(``python tests/toy.py``) is killed with SIGTERM or SIGKILL in the meta-learning and in the test-time-adaptation
stage and the same command restarted; its saved result must equal an uninterrupted run's, bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from concrete_subspace.checkpoint import CheckpointError, load_checkpoint
from concrete_subspace.registry import run_method

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent


class Crash(Exception):
    """Stands in for a job being killed mid-run."""


def crashing(problem, after_calls: int):
    """The problem with an unlabeled-data source that raises :class:`Crash` on call number ``after_calls`` + 1."""
    calls = {"n": 0}

    def unlabeled_batch(task, step):
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise Crash(f"crash at data call {calls['n']} (task {task}, step {step})")
        return problem.unlabeled_batch(task, step)

    return dataclasses.replace(problem, unlabeled_batch=unlabeled_batch), calls


def assert_same_result(a, b):
    assert a.state.keys() == b.state.keys()
    for k in a.state:
        assert torch.equal(a.state[k], b.state[k]), k
    assert a.history == b.history
    for k in set(a.extras) & {"mask_logits", "coefficients"}:
        assert torch.equal(a.extras[k], b.extras[k]), k


# T = 3 tasks: the fail-fast data check reads 3 batches; a CTA / AdaMerging step reads 3, a Concrete AM meta step 6.
CASES = {
    "cta": ("concrete_task_arithmetic", {"steps": 12, "lr": 1e-2, "eval_every": 5}, [3 + 3 * 7 + 1]),
    "adamerging": ("layer_wise_adamerging", {"steps": 12, "lr": 1e-2}, [3 + 3 * 7 + 2]),
    "concrete_am": (
        "layer_wise_concrete_adamerging",
        {"meta_steps": 10, "tta_steps": 8, "outer_lr": 1e-2, "eval_every": 4},
        [
            3 + 6 * 5 + 4,  # meta step 6 (last checkpoint: meta 3)
            3 + 6 * 10 + 1,  # first TTA step (last checkpoint: end of meta)
            3 + 6 * 10 + 3 * 5 + 1,
        ],
    ),  # TTA step 6 (last checkpoint: tta 3)
}


@pytest.mark.parametrize("case", list(CASES))
def test_resume_after_crash_equals_uninterrupted(toy, tmp_path, case):
    name, params, crash_points = CASES[case]
    common = {"checkpoint_every": 3, "progress": False, "log_every": 2, **params}
    reference = run_method(name, toy, **common)
    for i, after_calls in enumerate(crash_points):
        directory = tmp_path / f"run{i}"
        problem, _ = crashing(toy, after_calls)
        with pytest.raises(Crash):
            run_method(name, problem, checkpoint_dir=str(directory), **common)
        assert (directory / "checkpoint.ckpt").exists()
        resumed = run_method(name, toy, checkpoint_dir=str(directory), **common)
        assert_same_result(resumed, reference)
        # a finished run is not recomputed: only the fail-fast check reads data, and the result is the same
        problem, calls = crashing(toy, 10**9)
        again = run_method(name, problem, checkpoint_dir=str(directory), **common)
        assert_same_result(again, reference)
        assert calls["n"] == len(toy.task_names)


def test_two_crashes_in_a_row_still_resume_exactly(toy, tmp_path):
    common = {"meta_steps": 10, "tta_steps": 8, "checkpoint_every": 2, "progress": False}
    reference = run_method("layer_wise_concrete_adamerging", toy, **common)
    for after_calls in (3 + 6 * 3 + 2, 3 + 6 * 8 + 3 * 3):  # meta step 4, then (resumed at meta 2) TTA step 4
        problem, _ = crashing(toy, after_calls)
        with pytest.raises(Crash):
            run_method("layer_wise_concrete_adamerging", problem, checkpoint_dir=str(tmp_path), **common)
    assert load_checkpoint(tmp_path / "checkpoint.ckpt")["stage"] == "tta"
    assert_same_result(
        run_method("layer_wise_concrete_adamerging", toy, checkpoint_dir=str(tmp_path), **common), reference
    )


def test_checkpoint_from_another_configuration_is_refused_and_named(toy, tmp_path):
    run_method("concrete_task_arithmetic", toy, steps=2, lr=1e-2, checkpoint_dir=str(tmp_path), progress=False)
    with pytest.raises(CheckpointError, match=r"different configuration \(lr: saved 0\.01, now 0\.001\)") as info:
        run_method("concrete_task_arithmetic", toy, steps=2, lr=1e-3, checkpoint_dir=str(tmp_path), progress=False)
    assert "\n" not in str(info.value) and "checkpoint_dir" in str(info.value)
    with pytest.raises(CheckpointError, match="different configuration"):  # another method in the same directory
        run_method("layer_wise_adamerging", toy, steps=2, checkpoint_dir=str(tmp_path), progress=False)
    # reporting-only parameters may change between the interrupted run and its restart
    run_method(
        "concrete_task_arithmetic",
        toy,
        steps=2,
        lr=1e-2,
        checkpoint_dir=str(tmp_path),
        progress=False,
        log_every=1,
        checkpoint_every=7,
    )
    # resume=False starts over and overwrites
    fresh = run_method(
        "concrete_task_arithmetic", toy, steps=2, lr=1e-3, checkpoint_dir=str(tmp_path), progress=False, resume=False
    )
    assert load_checkpoint(tmp_path / "checkpoint.ckpt")["fingerprint"].count('"lr": 0.001') == 1
    assert fresh.params["lr"] == 1e-3


@pytest.mark.parametrize(
    "name,params",
    [
        ("concrete_task_arithmetic", {"steps": 2}),
        ("layer_wise_adamerging", {"steps": 2}),
        ("layer_wise_concrete_adamerging", {"meta_steps": 2, "tta_steps": 1}),
    ],
)
def test_foreign_checkpoint_is_refused_before_any_model_is_loaded(toy, tmp_path, name, params):
    run_method(name, toy, checkpoint_dir=str(tmp_path), seed=1, progress=False, **params)

    def load(task):
        raise AssertionError("a fine-tuned model was loaded before the checkpoint was checked")

    with pytest.raises(CheckpointError, match=r"seed: saved 1, now 2"):
        run_method(
            name,
            dataclasses.replace(toy, load_finetuned=load),
            checkpoint_dir=str(tmp_path),
            seed=2,
            progress=False,
            **params,
        )


def test_checkpoint_every_must_be_positive(toy, tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every must be positive, got 0"):
        run_method(
            "concrete_task_arithmetic", toy, steps=2, checkpoint_dir=str(tmp_path), checkpoint_every=0, progress=False
        )


# ---------------------------------------------------------------------------------------------------------------
# Real kills of a separate process
# ---------------------------------------------------------------------------------------------------------------
KILL_JOB = {
    "method": "layer_wise_concrete_adamerging",
    "meta_steps": 40,
    "tta_steps": 30,
    "outer_lr": 1e-2,
    "checkpoint_every": 4,
    "log_every": 5,
}
META, TTA, CHECK = 6, 3, 3  # data calls per meta step, per TTA step, and by the fail-fast check at start-up

# Each restart resumes from the last checkpoint before the previous kill; the job pauses in the middle of the step
# after ``after_calls`` data calls (deterministic, whatever the machine's load) and is killed there.
KILLS = [  # (signal, data calls before the pause, expected checkpoint (stage, step) at the kill)
    (signal.SIGTERM, CHECK + META * 10 + 2, ("meta", 8)),  # fresh start; paused in meta step 11
    (signal.SIGKILL, CHECK + META * (21 - 8) + 4, ("meta", 20)),  # resumed at meta 8; paused in meta step 22
    (signal.SIGTERM, CHECK + META * (40 - 20) + TTA * 6 + 1, ("tta", 4)),  # resumed at meta 20; paused in TTA step 7
    (signal.SIGKILL, CHECK + TTA * (17 - 4) + 2, ("tta", 16)),  # resumed at TTA 4; paused in TTA step 18
]


def start_job(directory: Path, out: Path, **extra) -> subprocess.Popen:
    spec = {**KILL_JOB, "checkpoint_dir": str(directory), "out": str(out), **extra}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(TESTS / "toy.py"), json.dumps(spec)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for(proc: subprocess.Popen, marker: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"job ended (rc {proc.returncode}) before pausing: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"job did not pause within {timeout}s")
        time.sleep(0.02)


def test_killed_concrete_adamerging_job_resumes_to_the_uninterrupted_result(toy, tmp_path):
    """One job killed four times (SIGTERM and SIGKILL, in meta-learning and in TTA), restarted each time, then finished."""
    params = {k: v for k, v in KILL_JOB.items() if k != "method"}
    reference = run_method(KILL_JOB["method"], toy, progress=False, **params)
    directory, out = tmp_path / "ckpt", tmp_path / "result.ckpt"
    for i, (sig, after_calls, (stage, step)) in enumerate(KILLS):
        marker = tmp_path / f"paused{i}"
        job = start_job(directory, out, pause_after_calls=after_calls, pause_marker=str(marker))  # the same command
        wait_for(job, marker)
        payload = load_checkpoint(directory / "checkpoint.ckpt")
        assert (payload["stage"], payload["step"]) == (stage, step)
        job.send_signal(sig)
        assert job.wait(timeout=60) == -sig
        assert not out.exists()
    job = start_job(directory, out)
    assert job.wait(timeout=300) == 0, job.stderr.read().decode()[-2000:]
    result = load_checkpoint(out)
    for k, v in reference.state.items():
        assert torch.equal(result["state"][k], v), k
    assert result["history"] == reference.history
    assert [p.name for p in directory.iterdir()] == ["checkpoint.ckpt"]  # no temp file left behind


def test_stale_temp_files_of_killed_writers_are_removed_on_restart(toy, tmp_path):
    stale = tmp_path / ".checkpoint.ckpt.tmp-999999"
    stale.write_bytes(b"half a checkpoint")
    run_method("concrete_task_arithmetic", toy, steps=1, checkpoint_dir=str(tmp_path), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.ckpt"]
