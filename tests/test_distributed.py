"""torch.distributed task parallelism (gloo, 2 CPU processes): every rank ends with the one-process result.

Launched with ``python -m torch.distributed.run`` (= torchrun) as users would, on the toy problem for every
test-time method, and through ``python -m concrete_subspace.run`` on the smoke zoo. Each launch costs a few seconds
of process start-up, so the methods of one comparison share a launch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from concrete_subspace import distributed
from concrete_subspace.checkpoint import load_checkpoint
from concrete_subspace.registry import run_method
from concrete_subspace.task_vectors import ParamLayout

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
METHODS = {
    "concrete_task_arithmetic": {"steps": 4, "lr": 0.05},
    "layer_wise_adamerging": {"steps": 4, "lr": 0.05},
    "task_wise_adamerging": {"steps": 4, "lr": 0.05},
    "layer_wise_adamerging_pp": {"steps": 3, "lr": 0.05},
    "layer_wise_concrete_adamerging": {"meta_steps": 3, "tta_steps": 3, "outer_lr": 0.05, "tta_lr": 0.05},
    "task_wise_concrete_adamerging": {"meta_steps": 2, "tta_steps": 2, "outer_lr": 0.05, "tta_lr": 0.05},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, *args: str, timeout: float = 240, wait: bool = True, **popen):
    """``python -m torch.distributed.run --nproc-per-node N ARGS`` on localhost, one thread per process."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        *args,
    ]
    if not wait:
        return subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True, **popen)
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def assert_same_result(saved: dict, single) -> None:
    """A rank's saved result (dist_toy.py) equals the one-process MergeResult: tensors, merged state, losses."""
    for key, tensor in single.extras.items():
        if torch.is_tensor(tensor):
            close(saved["tensors"][key], tensor)
    for key, tensor in single.state.items():
        close(saved["state"][key], tensor)
    assert [row["loss"] for row in saved["history"]] == pytest.approx([row["loss"] for row in single.history], rel=1e-5)


def test_local_tasks_and_reductions_on_one_process():
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.local_tasks(("a", "b", "c")) == ("a", "b", "c")
    t = torch.ones(3)
    assert distributed.all_reduce_(t) is t and t.tolist() == [1, 1, 1]
    assert distributed.gather_task_values(("a", "b"), {"a": 1, "b": 2.5}, torch.device("cpu")) == {"a": 1.0, "b": 2.5}


def test_shard_plan_is_contiguous_balanced_and_complete():
    layout = ParamLayout(tuple(f"k{i}" for i in range(6)), tuple(torch.Size([n]) for n in (10, 40, 10, 30, 5, 5)))
    for ranks in (1, 2, 3, 4, 8):
        bounds = distributed.plan_shards(layout, ranks)
        assert len(bounds) == ranks and bounds[0][0] == 0 and bounds[-1][1] == 6
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, no gaps or overlaps
    sizes = [sum(layout.numels[a:b]) for a, b in distributed.plan_shards(layout, 2)]
    assert sizes == [50, 50]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    torchrun(2, str(HERE / "dist_toy.py"), json.dumps({"out": str(out), "methods": METHODS}))
    return out


@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_equal_one_process(toy, two_process_results, method):
    single = run_method(method, toy, progress=False, **METHODS[method])
    ranks = [load_checkpoint(two_process_results / f"{method}.rank{r}.ckpt") for r in range(2)]
    assert ranks[0]["world_size"] == 2
    for saved in ranks:
        assert_same_result(saved, single)
    # the two ranks hold the same numbers exactly (same all-reduced gradients, same Adam steps)
    for key in ranks[0]["tensors"]:
        assert torch.equal(ranks[0]["tensors"][key], ranks[1]["tensors"][key])
    moved = [t for k, t in single.extras.items() if k in ("mask_logits", "coefficients")]
    assert moved and any(not torch.allclose(t, t.flatten()[0].expand_as(t)) for t in moved)  # something was learned


SHARDED = {name: {**params, "shard_vectors": True} for name, params in METHODS.items() if not name.endswith("_pp")}


@pytest.fixture(scope="module")
def sharded_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    torchrun(2, str(HERE / "dist_toy.py"), json.dumps({"out": str(out), "methods": SHARDED}))
    return out


@pytest.mark.parametrize("method", list(SHARDED))
def test_sharded_task_vectors_equal_one_process(toy, sharded_results, method):
    """Each rank keeps half the tensors' task vectors, logits and Adam state: the result is still the one-device one."""
    single = run_method(method, toy, progress=False, **METHODS[method])
    for r in range(2):
        assert_same_result(load_checkpoint(sharded_results / f"{method}.rank{r}.ckpt"), single)


def test_sharding_refuses_adamerging_pp(toy):
    from concrete_subspace.adamerging import prepare_vectors

    layout = ParamLayout.of(toy.pretrained)
    two_blocks = distributed.Shard(layout, layout, slice(0, 1), 0, 10, (10, layout.num_params - 10))
    with pytest.raises(ValueError, match="ties_density"):
        prepare_vectors(toy, None, False, 0.2, shard=two_blocks)


def test_more_ranks_than_tasks(toy, tmp_path):
    """Three processes, two tasks: the rank without a task contributes a zero gradient and still agrees."""
    from toy import make_toy_problem

    methods = {"concrete_task_arithmetic": METHODS["concrete_task_arithmetic"]}
    torchrun(3, str(HERE / "dist_toy.py"), json.dumps({"out": str(tmp_path), "methods": methods, "num_tasks": 2}))
    single = run_method(
        "concrete_task_arithmetic", make_toy_problem(num_tasks=2), progress=False, **methods["concrete_task_arithmetic"]
    )
    for r in range(3):
        close(
            load_checkpoint(tmp_path / f"concrete_task_arithmetic.rank{r}.ckpt")["tensors"]["mask_logits"],
            single.extras["mask_logits"],
        )


@pytest.mark.parametrize("shard_vectors", [False, True])
def test_killed_distributed_run_resumes_to_the_uninterrupted_result(toy, tmp_path, shard_vectors):
    """Rank 0 writes the checkpoint (each rank its block when sharded); a run killed mid-way and launched again ends
    where an uninterrupted run does."""
    params = {
        "meta_steps": 4,
        "tta_steps": 4,
        "outer_lr": 0.05,
        "tta_lr": 0.05,
        "checkpoint_every": 1,
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "shard_vectors": shard_vectors,
    }
    marker = tmp_path / "paused"
    # rank 0 has 2 of the 3 tasks: 2 data calls for the up-front check, then 4 per meta step -> paused in meta step 3
    config = {
        "out": str(tmp_path / "out"),
        "methods": {"layer_wise_concrete_adamerging": params},
        "pause_after_calls": 11,
        "pause_marker": str(marker),
    }
    job = torchrun(
        2,
        str(HERE / "dist_toy.py"),
        json.dumps(config),
        wait=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 180
        while not marker.exists():
            assert job.poll() is None and time.time() < deadline, "the distributed job ended before it paused"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:  # the launcher, then its workers (each in a session of its own)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        for pid_file in (tmp_path / "out").glob("pid.rank*"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
            pid_file.unlink()
    names = ["checkpoint.rank0-of-2.ckpt", "checkpoint.rank1-of-2.ckpt"] if shard_vectors else ["checkpoint.ckpt"]
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt")) == names
    saved = load_checkpoint(tmp_path / "ckpt" / names[0])
    assert 0 < saved["step"] and saved["stage"] == "meta"
    del config["pause_after_calls"]
    torchrun(2, str(HERE / "dist_toy.py"), json.dumps(config))
    uninterrupted = run_method(
        "layer_wise_concrete_adamerging",
        toy,
        progress=False,
        **{k: v for k, v in params.items() if not k.startswith("checkpoint") and k != "shard_vectors"},
    )
    resumed = load_checkpoint(tmp_path / "out" / "layer_wise_concrete_adamerging.rank1.ckpt")
    close(resumed["tensors"]["mask_logits"], uninterrupted.extras["mask_logits"])
    close(resumed["tensors"]["coefficients"], uninterrupted.extras["coefficients"])


@pytest.mark.slow
def test_run_entry_point_on_the_smoke_zoo_two_processes_equal_one(tmp_path):
    from concrete_subspace.experiments import ensure_zoo

    ensure_zoo(seed=0, smoke=True, progress=False)
    args = [
        "-m",
        "concrete_subspace.run",
        "concrete_task_arithmetic",
        "--smoke",
        "--param",
        "steps=2",
        "--param",
        "lr=0.05",
    ]
    torchrun(2, *args, "--out", str(tmp_path / "two"))
    torchrun(1, *args, "--out", str(tmp_path / "one"))
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    one = json.loads((tmp_path / "one" / "result.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert [r["loss"] for r in two["history"]] == pytest.approx([r["loss"] for r in one["history"]], rel=1e-5)
    from safetensors.torch import load_file

    # Adam divides by sqrt(v): for the few logits whose gradient is near zero (|g| ~ eps) the fp32 summation order
    # of the two ranks' partial gradients moves the update visibly (measured: 0.1% of the 463,584 logits differ by
    # more than 1e-5, the largest by 8e-5, after 2 steps at lr 0.05)
    close(
        load_file(tmp_path / "two" / "tensors.safetensors")["mask_logits"],
        load_file(tmp_path / "one" / "tensors.safetensors")["mask_logits"],
        tol=5e-4,
    )
    assert two["scores"] == pytest.approx(one["scores"], abs=0.5)  # accuracy over a few hundred images


def test_run_entry_point_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    from concrete_subspace import run

    assert run.main(["no_such_method", "--out", str(tmp_path)]) == run.EXIT_USAGE
    assert run.main(["concrete_task_arithmetic", "--param", "stepz=3", "--out", str(tmp_path)]) == run.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no_such_method" in err[0] and "stepz" in err[1]
    assert not any(tmp_path.iterdir())  # nothing written
