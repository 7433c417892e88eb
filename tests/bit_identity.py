"""Record, then compare exactly, every test-time method's results on the smoke zoo (a refactor must not move a bit).

Usage (from the repository root, offline):
    python tests/bit_identity.py save BEFORE.pt    # on the code before the change
    python tests/bit_identity.py save AFTER.pt     # on the code after it, same machine
    python tests/bit_identity.py compare BEFORE.pt AFTER.pt

Each run takes a few steps with evaluation along the way (eval_every > 0) and a checkpoint folder, so the merged
state, mask logits, coefficients, history (incl. the evaluation rows), resolved params, JSON extras and the
checkpoint's fingerprint are all recorded. Pure differences are reported per run and key; exit status 1 if any.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

STEPS = {"steps": 3}
META = {"meta_steps": 3, "tta_steps": 3}
RUNS: dict[str, tuple[str, dict]] = {
    "cta": ("concrete_task_arithmetic", STEPS),
    "cta_expected": ("concrete_task_arithmetic", {**STEPS, "eval_mask": "expected", "seed": 3}),
    "task_cam": ("task_wise_concrete_adamerging", META),
    "layer_cam": ("layer_wise_concrete_adamerging", META),
    "layer_cam_fusion_bench": ("layer_wise_concrete_adamerging", {**META, "variant": "fusion_bench"}),
    "layer_cam_previous_weights": ("layer_wise_concrete_adamerging", {**META, "inner_uses_previous_weights": True}),
    "layer_cam_fresh_inner": ("layer_wise_concrete_adamerging", {**META, "persist_inner_optimizer": False}),
    "task_adamerging": ("task_wise_adamerging", STEPS),
    "layer_adamerging": ("layer_wise_adamerging", STEPS),
    "task_adamerging_pp": ("task_wise_adamerging_pp", STEPS),
    "layer_adamerging_pp": ("layer_wise_adamerging_pp", STEPS),
    # one forward/backward per task: the gradient of the merged parameters accumulates over the tasks
    "cta_per_task": ("concrete_task_arithmetic", {**STEPS, "forward_mode": "per_task"}),
    "layer_cam_per_task": ("layer_wise_concrete_adamerging", {**META, "forward_mode": "per_task"}),
    "layer_adamerging_per_task": ("layer_wise_adamerging", {**STEPS, "forward_mode": "per_task"}),
}
RUN_OPTIONS = {"eval_every": 2, "log_every": 1, "checkpoint_every": 2, "progress": False}


def smoke_problem():
    from concrete_subspace.experiments import ensure_zoo
    from concrete_subspace.zoo import load_zoo_problem

    return load_zoo_problem(ensure_zoo(seed=0, smoke=True, progress=False), split="test")


def record_all() -> dict:
    """Every run of :data:`RUNS` on the smoke zoo: {name: recorded values}."""
    from concrete_subspace.checkpoint import load_checkpoint
    from concrete_subspace.registry import run_method

    problem = smoke_problem()
    records = {}
    for name, (method, params) in RUNS.items():
        with tempfile.TemporaryDirectory() as folder:
            result = run_method(method, problem, **params, **RUN_OPTIONS, checkpoint_dir=folder)
            fingerprint = load_checkpoint(Path(folder) / "checkpoint.ckpt")["fingerprint"]
        records[name] = {
            "state": dict(result.state),
            "params": {k: v for k, v in result.params.items() if k != "checkpoint_dir"},
            "history": result.history,
            "extras": result.extras,
            "fingerprint": fingerprint,
        }
        print(f"recorded {name}", flush=True)
    return records


def differences(before, after, where: str = "") -> list[str]:
    """Where two recorded values differ: tensors by torch.equal (dtype and shape included), the rest by ==."""
    if torch.is_tensor(before) or torch.is_tensor(after):
        same = torch.is_tensor(before) and torch.is_tensor(after) and before.dtype == after.dtype
        return [] if same and torch.equal(before, after) else [where]
    if isinstance(before, dict) and isinstance(after, dict):
        if list(before) != list(after):
            return [f"{where} keys {list(before)} != {list(after)}"]
        return [d for k in before for d in differences(before[k], after[k], f"{where}/{k}")]
    if isinstance(before, (list, tuple)) and isinstance(after, (list, tuple)) and type(before) is type(after):
        if len(before) != len(after):
            return [f"{where} length {len(before)} != {len(after)}"]
        return [d for i, (b, a) in enumerate(zip(before, after)) for d in differences(b, a, f"{where}[{i}]")]
    return [] if before == after else [f"{where}: {before!r} != {after!r}"]


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "save":
        torch.save(record_all(), argv[1])
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        found = differences(torch.load(argv[1], weights_only=False), torch.load(argv[2], weights_only=False))
        print("\n".join(found) if found else "bit-identical: every run, every tensor, history and param")
        return 1 if found else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
