"""The command line: info, data-free merges of HF / safetensors checkpoints, and one-line errors for bad input."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file
from toy import tiny_vision
from transformers import CLIPVisionModel

from concrete_subspace.cli import main
from concrete_subspace.merging import task_arithmetic
from concrete_subspace.state_io import save_state_dict


@pytest.fixture
def checkpoints(tmp_path):
    pretrained = tiny_vision(0)
    pretrained.save_pretrained(tmp_path / "pre")
    dirs = []
    for i in (1, 2):
        model = tiny_vision(0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * i * torch.randn_like(p))
        model.save_pretrained(tmp_path / f"ft{i}")
        dirs.append(tmp_path / f"ft{i}")
    return tmp_path / "pre", dirs


def test_info_prints_versions(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["versions"]["torch"].startswith("2.14.1") and "device" in info


def test_merge_task_arithmetic_matches_library(checkpoints, tmp_path, capsys):
    pre, fts = checkpoints
    out = tmp_path / "merged"
    assert (
        main(
            [
                "merge",
                "--method",
                "task_arithmetic",
                "--pretrained",
                str(pre),
                "--finetuned",
                *map(str, fts),
                "--out",
                str(out),
                "--param",
                "scaling=0.5",
            ]
        )
        == 0
    )
    merged = load_file(out / "model.safetensors")
    p0 = load_file(pre / "model.safetensors")
    vectors = [{k: load_file(d / "model.safetensors")[k] - p0[k] for k in p0 if p0[k].is_floating_point()} for d in fts]
    expected = task_arithmetic(p0, vectors, 0.5)
    assert merged.keys() == p0.keys()
    for k in expected:
        torch.testing.assert_close(merged[k], expected[k])
    record = json.loads((out / "merge.json").read_text())
    assert record["params"] == {"scaling": 0.5} and record["method"] == "task_arithmetic"
    assert CLIPVisionModel.from_pretrained(out) is not None  # config copied: a loadable HF directory


@pytest.mark.parametrize("method", ["weight_averaging", "ties_merging"])
def test_merge_other_data_free_methods(checkpoints, tmp_path, method):
    pre, fts = checkpoints
    assert (
        main(
            [
                "merge",
                "--method",
                method,
                "--pretrained",
                str(pre),
                "--finetuned",
                *map(str, fts),
                "--out",
                str(tmp_path / method),
            ]
        )
        == 0
    )
    assert all(
        torch.isfinite(v).all()
        for v in load_file(tmp_path / method / "model.safetensors").values()
        if v.is_floating_point()
    )


def one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_bad_arguments_exit_with_one_line(checkpoints, tmp_path, capsys):
    pre, fts = checkpoints
    base = ["--pretrained", str(pre), "--finetuned", *map(str, fts), "--out", str(tmp_path / "o")]
    one_line_error(capsys, ["merge", "--method", "task_arithmatic", *base], "unknown method", "task_arithmetic")
    one_line_error(
        capsys, ["merge", "--method", "task_arithmetic", "--param", "scalin=0.3", *base], "unknown parameter", "scaling"
    )
    one_line_error(capsys, ["merge", "--method", "task_arithmetic", "--param", "scaling=abc", *base], "scaling=abc")
    one_line_error(capsys, ["merge", "--method", "concrete_task_arithmetic", *base], "needs test data")
    one_line_error(
        capsys,
        [
            "merge",
            "--method",
            "task_arithmetic",
            "--pretrained",
            str(tmp_path / "missing"),
            "--finetuned",
            str(fts[0]),
            "--out",
            str(tmp_path / "o"),
        ],
        "no such checkpoint",
        "missing",
    )


def test_mismatched_models_name_the_key(checkpoints, tmp_path, capsys):
    pre, fts = checkpoints
    state = load_file(fts[0] / "model.safetensors")
    key = next(k for k, v in state.items() if v.dim() == 2)
    state[key] = torch.zeros(3, 3)
    save_state_dict(tmp_path / "bad.safetensors", state)
    one_line_error(
        capsys,
        [
            "merge",
            "--method",
            "task_arithmetic",
            "--pretrained",
            str(pre),
            "--finetuned",
            str(tmp_path / "bad.safetensors"),
            "--out",
            str(tmp_path / "o"),
        ],
        "shape mismatch",
        key,
    )


class Exploit:
    def __reduce__(self):
        return (exec, ("open('PWNED_MARKER', 'w').write('x')",))


def test_malicious_pickle_is_refused(checkpoints, tmp_path, capsys, monkeypatch):
    pre, _ = checkpoints
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"w": Exploit()}, fh)
    one_line_error(
        capsys,
        [
            "merge",
            "--method",
            "task_arithmetic",
            "--pretrained",
            str(pre),
            "--finetuned",
            str(tmp_path / "evil.pt"),
            "--out",
            str(tmp_path / "o"),
        ],
        "refused",
    )
    assert not (tmp_path / "PWNED_MARKER").exists()
