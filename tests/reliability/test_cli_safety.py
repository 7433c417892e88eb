"""Issue 13, points 4-8: `concrete-subspace merge` never touches its inputs, reads bad files in one line, refuses
non-finite input, documents its methods, prints warnings as one line, and keeps tracebacks for real bugs."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from toy import tiny_vision

from concrete_subspace import registry
from concrete_subspace.checkpoint import atomic_write_json
from concrete_subspace.cli import main


@pytest.fixture
def models(tmp_path):
    """A pre-trained and two fine-tuned HF directories under tmp_path/in."""
    root = tmp_path / "in"
    tiny_vision(0).save_pretrained(root / "pre")
    for i in (1, 2):
        model = tiny_vision(0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * i * torch.randn_like(p))
        model.save_pretrained(root / f"ft{i}")
    return root / "pre", [root / "ft1", root / "ft2"]


def digest_tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def merge(pre, fts, out, *extra):
    return main(
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
            *extra,
        ]
    )


def one_line_error(capsys, code, *needles):
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# ------------------------------------------------------------------------------------------ point 4: inputs are safe
@pytest.mark.parametrize(
    "where,needle",
    [
        ("ft", "is the input"),
        ("pre", "is the input"),
        ("parent", "contains the input"),
        ("inside", "lies inside the input"),
    ],
)
def test_out_that_is_contains_or_lies_inside_an_input_is_refused_and_inputs_untouched(models, capsys, where, needle):
    pre, fts = models
    out = {"ft": fts[0], "pre": pre, "parent": pre.parent, "inside": pre / "merged"}[where]
    before = digest_tree(pre.parent)
    one_line_error(capsys, merge(pre, fts, out, "--overwrite"), needle, "--out")
    assert digest_tree(pre.parent) == before and not (pre / "merged").exists()


def test_out_through_a_symlink_to_an_input_is_refused(models, tmp_path, capsys):
    pre, fts = models
    (tmp_path / "alias").symlink_to(fts[1], target_is_directory=True)
    one_line_error(capsys, merge(pre, fts, tmp_path / "alias", "--overwrite"), "is the input")


def test_non_empty_out_needs_overwrite_which_replaces_it(models, tmp_path, capsys):
    pre, fts = models
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_line_error(capsys, merge(pre, fts, out), "not empty", "--overwrite")
    assert (out / "notes.txt").read_text() == "mine"
    assert merge(pre, fts, out, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "merge.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temp or old directory left
    empty = tmp_path / "empty"
    empty.mkdir()
    assert merge(pre, fts, empty) == 0  # an empty directory is fine


def test_a_crash_while_writing_leaves_no_half_written_model(models, tmp_path, monkeypatch):
    pre, fts = models
    import concrete_subspace.state_io as state_io

    def crash(path, state, metadata=None):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(state_io, "save_state_dict", crash)
    with pytest.raises(OSError, match="disk full"):  # not a user error: it keeps its traceback
        merge(pre, fts, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"previous")
    with pytest.raises(OSError, match="disk full"):
        merge(pre, fts, old, "--overwrite")
    assert (old / "model.safetensors").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "old"]


# ------------------------------------------------------------------------------------------ point 5: unreadable files
def torch_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    return buffer.getvalue()


CORRUPTIONS = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "zero-byte": lambda raw: b"",
    "corrupted header": lambda raw: raw[:8] + b"{not json" + raw[17:],
    "not safetensors": lambda raw: torch_bytes(),
}


@pytest.mark.parametrize("which", ["pretrained", "finetuned"])
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_unreadable_model_file_is_one_line_naming_the_file(models, tmp_path, capsys, which, corruption):
    pre, fts = models
    bad = pre if which == "pretrained" else fts[1]
    path = bad / "model.safetensors"
    path.write_bytes(CORRUPTIONS[corruption](path.read_bytes()))
    err = one_line_error(capsys, merge(pre, fts, tmp_path / "out"), str(path))
    assert "empty file" in err if corruption == "zero-byte" else "not a readable safetensors file" in err
    assert not (tmp_path / "out").exists()


def test_truncated_torch_file_and_broken_shard_index_are_one_line(models, tmp_path, capsys):
    pre, fts = models
    (tmp_path / "ft.pt").write_bytes(torch_bytes()[:40])
    one_line_error(capsys, merge(pre, [tmp_path / "ft.pt"], tmp_path / "out"), str(tmp_path / "ft.pt"), "truncated")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "model.safetensors.index.json").write_text('{"weight_map": {"a": "model-00001.safetensors"}}')
    one_line_error(capsys, merge(pre, [sharded], tmp_path / "out"), "model-00001.safetensors", "missing")
    (sharded / "model.safetensors.index.json").write_text("{oops")
    one_line_error(capsys, merge(pre, [sharded], tmp_path / "out"), "index")


def test_out_that_is_an_existing_file_is_one_line(models, tmp_path, capsys):
    pre, fts = models
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, merge(pre, fts, tmp_path / "file", "--overwrite"), "is an existing file")
    assert (tmp_path / "file").read_text() == "x"


# ------------------------------------------------------------------------------------------ point 6: finite numbers
def test_non_finite_pretrained_is_an_error_naming_the_key(models, tmp_path, capsys):
    pre, fts = models
    state = load_file(pre / "model.safetensors")
    key = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 2)
    state[key][0, 0] = float("nan")
    save_file(state, pre / "model.safetensors")
    one_line_error(capsys, merge(pre, fts, tmp_path / "out"), "pre-trained model", key, "NaN")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("param", ["scaling=nan", "scaling=inf", "scaling=-inf"])
def test_non_finite_parameter_values_are_refused(models, tmp_path, capsys, param):
    pre, fts = models
    one_line_error(capsys, merge(pre, fts, tmp_path / "out", "--param", param), param, "finite")


def test_nonsensical_density_is_refused_before_loading(models, tmp_path, capsys):
    pre, fts = models
    one_line_error(
        capsys,
        main(
            [
                "merge",
                "--method",
                "ties_merging",
                "--pretrained",
                str(pre),
                "--finetuned",
                *map(str, fts),
                "--out",
                str(tmp_path / "o"),
                "--param",
                "density=1.5",
            ]
        ),
        "density",
    )


def test_merge_json_and_results_files_are_standard_json(models, tmp_path):
    pre, fts = models
    assert merge(pre, fts, tmp_path / "out", "--param", "scaling=0.5") == 0

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    record = json.loads((tmp_path / "out" / "merge.json").read_text(), parse_constant=refuse)
    assert record["params"] == {"scaling": 0.5} and record["environment"]["installed_sha256"]
    atomic_write_json(tmp_path / "r.json", {"loss": float("nan"), "rows": [float("inf"), 1.0]})
    assert json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse) == {"loss": None, "rows": [None, 1.0]}


# ------------------------------------------------------------------------------------------ point 7: help and warnings
def test_merge_help_lists_data_free_methods_with_parameters_and_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        main(["merge", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "weight_averaging" in text and "no parameters" in text
    assert "scaling=0.3" in text and "density=0.2" in text and "concrete_task_arithmetic" in text


def test_warnings_are_one_line_and_a_model_given_twice_warns(models, tmp_path, capsys):
    pre, fts = models
    assert merge(pre, [fts[0], fts[0]], tmp_path / "a") == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("concrete-subspace: warning: DuplicateModelWarning:"), err
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes((fts[0] / "model.safetensors").read_bytes())
    assert merge(pre, [fts[0], copy], tmp_path / "b") == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "identical weights" in err[0], err
    assert merge(pre, [pre, fts[0]], tmp_path / "c") == 0  # a zero task vector: one line, no source echo
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ZeroTaskVectorWarning" in err[0] and "warnings.warn" not in err[0], err


# ------------------------------------------------------------------------------------------ point 8: real bugs
def test_internal_error_keeps_its_traceback_and_debug_shows_user_errors(models, tmp_path, monkeypatch, capsys):
    pre, fts = models

    def broken(pretrained, vectors, scaling=0.3):
        raise ValueError("internal bug in the merge")

    spec = registry.METHODS["task_arithmetic"]
    monkeypatch.setitem(
        registry.METHODS,
        "task_arithmetic",
        registry.MethodSpec(spec.name, spec.pretty_name, spec.reference, spec.run, spec.needs_data, broken),
    )
    with pytest.raises(ValueError, match="internal bug"):
        merge(pre, fts, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    monkeypatch.undo()
    from concrete_subspace.cli import CliError

    with pytest.raises(CliError, match="no such checkpoint"):
        main(
            [
                "merge",
                "--debug",
                "--method",
                "task_arithmetic",
                "--pretrained",
                str(tmp_path / "missing"),
                "--finetuned",
                str(fts[0]),
                "--out",
                str(tmp_path / "o"),
            ]
        )


# ------------------------------------------------------------------------------- issue 29, point 5: the last rough edges
def test_a_finite_scaling_that_overflows_float32_is_refused_before_writing(models, tmp_path, capsys):
    pre, fts = models
    code = merge(pre, fts, tmp_path / "out", "--param", "scaling=1e39")
    one_line_error(capsys, code, "merged model", "non-finite")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_out_whose_parent_is_a_regular_file_is_one_line(models, tmp_path, capsys):
    pre, fts = models
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, merge(pre, fts, tmp_path / "file" / "out"), "is a file, not a directory")
    assert (tmp_path / "file").read_text() == "x"


def test_overwrite_through_a_symlink_replaces_its_target_and_leaves_nothing_behind(models, tmp_path):
    pre, fts = models
    target = tmp_path / "target"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    (tmp_path / "link").symlink_to(target)
    assert merge(pre, fts, tmp_path / "link", "--overwrite") == 0
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link").resolve() == target.resolve()
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "merge.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "link", "target"]  # no hidden .link.old-PID


def test_param_for_a_method_without_parameters_names_the_problem(models, tmp_path, capsys):
    pre, fts = models
    code = main(
        ["merge", "--method", "weight_averaging", "--pretrained", str(pre), "--finetuned", *map(str, fts)]
        + ["--out", str(tmp_path / "out"), "--param", "scaling=0.5"]
    )
    err = one_line_error(capsys, code, "'weight_averaging' takes no parameters")
    assert "Valid parameters: \n" not in err and not err.rstrip().endswith(":")


def test_test_time_method_without_config_points_to_the_config(models, tmp_path, capsys):
    pre, fts = models
    code = main(
        ["merge", "--method", "concrete_task_arithmetic", "--pretrained", str(pre), "--finetuned", *map(str, fts)]
        + ["--out", str(tmp_path / "out")]
    )
    one_line_error(capsys, code, "--config")
