"""Files on disk: atomic writes survive failures, corrupted checkpoints are refused, pickles never run code (issue 6)."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import pytest
import torch

from concrete_subspace import checkpoint as ckpt
from concrete_subspace.checkpoint import (
    MAGIC,
    CheckpointError,
    atomic_write_bytes,
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
)
from concrete_subspace.registry import run_method


class RunsCode:
    """A pickle payload whose unpickling would create ``marker`` (standing in for arbitrary code execution)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def our_format(data: bytes) -> bytes:
    """``data`` wrapped in our header with a valid checksum: only the payload itself is hostile."""
    return MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data


def malicious_files(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (file, marker): a torch.save zip and a raw pickle, each also wrapped in our checkpoint format."""
    files = {}
    for name in ("torch_zip", "raw_pickle"):
        marker = tmp_path / f"{name}.marker"
        payload = {"tensors": {"x": torch.zeros(2)}, "evil": RunsCode(marker)}
        if name == "torch_zip":
            buffer = io.BytesIO()
            torch.save(payload, buffer)
            data = buffer.getvalue()
        else:
            data = pickle.dumps(payload, protocol=2)
        (tmp_path / f"{name}.pt").write_bytes(data)
        (tmp_path / f"{name}.ckpt").write_bytes(our_format(data))
        files[name] = (tmp_path / f"{name}.pt", marker)
        files[name + "_in_our_format"] = (tmp_path / f"{name}.ckpt", marker)
    return files


def test_the_crafted_files_really_would_run_code(tmp_path):
    """Positive control: an unsafe load of the same bytes does run the payload."""
    files = malicious_files(tmp_path)
    path, marker = files["raw_pickle"]
    pickle.loads(path.read_bytes())
    assert marker.read_text() == "code ran"
    marker.unlink()
    path, marker = files["torch_zip"]
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("name", ["torch_zip_in_our_format", "raw_pickle_in_our_format", "torch_zip", "raw_pickle"])
def test_our_checkpoint_loader_refuses_code_and_runs_none(tmp_path, name):
    path, marker = malicious_files(tmp_path)[name]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    if name.endswith("our_format"):  # valid checksum: refused by weights_only, with the reason, not torch's advice
        assert "refused to load" in message and "weights_only` set to `False`" not in message
        assert "Path" in message or "Unsupported" in message or "GLOBAL" in message
    else:
        assert "not a concrete_subspace checkpoint" in message
    assert not marker.exists()


def other_loaders():
    """Weight loaders of the adapters (owned elsewhere; tested here only for the no-code-execution guarantee)."""
    loaders = {}
    try:
        from concrete_subspace.state_io import load_state_dict, load_torch_weights

        loaders["state_io.load_torch_weights"] = load_torch_weights
        loaders["state_io.load_state_dict"] = load_state_dict
    except ImportError:
        pass
    try:
        from concrete_subspace.models import open_clip_ckpt

        loaders["open_clip_ckpt.load_checkpoint"] = open_clip_ckpt.load_checkpoint
        loaders["open_clip_ckpt.load_checkpoint(allow_pickle=True)"] = lambda path: open_clip_ckpt.load_checkpoint(
            path, allow_pickle=True
        )
    except ImportError:
        pass
    return loaders


@pytest.mark.parametrize(
    "loader", list(other_loaders()) or [pytest.param("none", marks=pytest.mark.skip("no loaders"))]
)
@pytest.mark.parametrize("name", ["torch_zip", "raw_pickle"])
def test_adapter_weight_loaders_refuse_code_and_run_none(tmp_path, loader, name):
    path, marker = malicious_files(tmp_path)[name]
    with pytest.warns(UserWarning) if "allow_pickle" in loader else _no_context():
        with pytest.raises(Exception) as info:
            other_loaders()[loader](path)
    assert "\n" not in str(info.value).strip(), str(info.value)
    assert not marker.exists()


class _no_context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------------------------------------------------------
# Corruption is detected and reported, never loaded
# ---------------------------------------------------------------------------------------------------------------
def saved(tmp_path: Path) -> Path:
    optimizer = torch.optim.Adam([torch.zeros(3, requires_grad=True)], lr=0.1)
    payload = {
        "stage": "meta",
        "step": 4,
        "fingerprint": "{}",
        "tensors": {"logits": torch.arange(5.0)},
        "optimizers": {"outer": optimizer.state_dict()},
        "generator": torch.Generator().manual_seed(1).get_state(),
        "history": [{"step": 1, "loss": 0.5}],
    }
    return save_checkpoint(tmp_path / "checkpoint.ckpt", payload)


def test_checkpoint_round_trip(tmp_path):
    loaded = load_checkpoint(saved(tmp_path))
    assert loaded["step"] == 4 and loaded["history"] == [{"step": 1, "loss": 0.5}]
    assert torch.equal(loaded["tensors"]["logits"], torch.arange(5.0))
    assert torch.equal(loaded["generator"], torch.Generator().manual_seed(1).get_state())


@pytest.mark.parametrize(
    "corruption", ["flip_byte", "truncate", "truncate_header", "empty", "other_format", "garbage_digest"]
)
def test_corrupted_checkpoint_is_refused_in_one_line(tmp_path, corruption):
    path = saved(tmp_path)
    raw = bytearray(path.read_bytes())
    if corruption == "flip_byte":
        raw[len(raw) // 2] ^= 0x01
    elif corruption == "truncate":
        raw = raw[: len(raw) - 100]
    elif corruption == "truncate_header":
        raw = raw[: len(MAGIC) + 10]
    elif corruption == "empty":
        raw = bytearray()
    elif corruption == "other_format":
        buffer = io.BytesIO()
        torch.save({"x": torch.zeros(1)}, buffer)
        raw = bytearray(buffer.getvalue())
    else:
        raw[len(MAGIC) : len(MAGIC) + 4] = b"\xff\xfe\x00\x80"
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum mismatch|not a concrete_subspace checkpoint") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and "delete it" in str(info.value)


def test_run_refuses_a_corrupted_checkpoint_instead_of_restarting_silently(toy, tmp_path):
    run_method(
        "concrete_task_arithmetic", toy, steps=4, checkpoint_every=2, checkpoint_dir=str(tmp_path), progress=False
    )
    path = tmp_path / "checkpoint.ckpt"
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        run_method(
            "concrete_task_arithmetic", toy, steps=4, checkpoint_every=2, checkpoint_dir=str(tmp_path), progress=False
        )


# ---------------------------------------------------------------------------------------------------------------
# Atomic writes: a failure mid-write leaves the previous file intact and no temporary file behind
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fail_in", ["fsync", "replace", "write"])
def test_failed_write_leaves_old_file_intact(tmp_path, monkeypatch, fail_in):
    path = atomic_write_bytes(tmp_path / "result.json", b"old contents")

    def boom(*args, **kwargs):
        raise OSError(f"simulated failure in {fail_in}")

    if fail_in == "write":
        real_open = open

        def failing_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            if "w" in mode:
                real_write = handle.write

                def write(data):
                    real_write(data[: len(data) // 2])
                    raise OSError("simulated failure in write (disk full)")

                handle.write = write
            return handle

        monkeypatch.setattr("builtins.open", failing_open)
    else:
        monkeypatch.setattr(ckpt.os, fail_in, boom)
    with pytest.raises(OSError, match="simulated failure"):
        atomic_write_bytes(path, b"new contents that never fully land")
    monkeypatch.undo()
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_atomic_write_json_round_trip(tmp_path):
    import json

    path = atomic_write_json(tmp_path / "sub" / "r.json", {"a": 1, "b": [1.5, "x"], "p": Path("y")})
    assert json.loads(path.read_text()) == {"a": 1, "b": [1.5, "x"], "p": "y"}


def test_failed_checkpoint_save_mid_run_keeps_the_previous_checkpoint_resumable(toy, tmp_path, monkeypatch):
    common = {"steps": 9, "lr": 1e-2, "checkpoint_every": 3, "progress": False}
    reference = run_method("concrete_task_arithmetic", toy, **common)
    real_fsync, calls = os.fsync, {"n": 0}

    def fsync_fails_on_second_save(fd):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("simulated disk failure while saving the step-6 checkpoint")
        return real_fsync(fd)

    monkeypatch.setattr(ckpt.os, "fsync", fsync_fails_on_second_save)
    with pytest.raises(OSError, match="simulated disk failure"):
        run_method("concrete_task_arithmetic", toy, checkpoint_dir=str(tmp_path), **common)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "checkpoint.ckpt")["step"] == 3
    resumed = run_method("concrete_task_arithmetic", toy, checkpoint_dir=str(tmp_path), **common)
    for k, v in reference.state.items():
        assert torch.equal(resumed.state[k], v)
    assert resumed.history == reference.history


# ---------------------------------------------------------------------------------------------------------------
# Static guards over the package source
# ---------------------------------------------------------------------------------------------------------------
def package_calls():
    """(file, ast.Call) for every call in concrete_subspace/**/*.py."""
    import ast

    root = Path(ckpt.__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call):
                yield path.relative_to(root.parent), node


def test_package_never_evals_or_execs():
    import ast

    bad = [
        f"{path}:{node.lineno}"
        for path, node in package_calls()
        if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec")
    ]
    assert not bad, f"eval/exec in the package: {bad}"


def test_every_torch_load_is_weights_only_or_restricted():
    """torch.load must pass weights_only=True, or (the explicit opt-in path) a restricted pickle_module."""
    import ast

    bad = []
    for path, node in package_calls():
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "load"
            and isinstance(func.value, ast.Name)
            and func.value.id == "torch"
        ):
            keywords = {k.arg: k.value for k in node.keywords}
            safe = isinstance(keywords.get("weights_only"), ast.Constant) and keywords["weights_only"].value is True
            if not (safe or "pickle_module" in keywords):
                bad.append(f"{path}:{node.lineno}")
    assert not bad, f"torch.load without weights_only=True: {bad}"
