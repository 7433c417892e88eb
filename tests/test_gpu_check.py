"""benchmarks/gpu_check.py: its one-step correctness check passes on a CPU against the shipped reference, catches a
perturbed reference, and the script refuses a missing CUDA device at once."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_step_matches_shipped_reference_and_a_perturbed_one_fails(tmp_path, monkeypatch):
    module = gpu_check()
    check = module.correctness("cpu", rtol=2e-3, atol=1e-9)
    assert check["ok"], check["failures"]
    reference = json.loads(module.REFERENCE.read_text())
    assert set(reference["values"]) == set(module.METHODS)
    grads = reference["values"]["layer_wise_concrete_adamerging"]["logits_grad_at"]
    grads[len(grads) // 2] = grads[len(grads) // 2] * 1.01 + 1e-6
    perturbed = tmp_path / "reference.json"
    perturbed.write_text(json.dumps(reference))
    monkeypatch.setattr(module, "REFERENCE", perturbed)
    failed = module.correctness("cpu", rtol=2e-3, atol=1e-9)
    assert not failed["ok"] and failed["num_failures"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a CUDA device")
def test_missing_cuda_fails_fast(capsys):
    assert gpu_check().main(["--device", "cuda"]) == 2
    assert "sees no CUDA device" in capsys.readouterr().err
