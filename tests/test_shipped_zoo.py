"""The shipped mini zoo: shipping a built zoo and materialising it give the same files and data; a corrupted file,
regenerated data that differ, or a stale format are refused with one line naming the problem; the zoo committed
in the package is complete, current and within the size budget, and its data regenerate here."""

from __future__ import annotations

import json
import os
import shutil

import pytest

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")

from concrete_subspace import zoo  # noqa: E402
from concrete_subspace.mini_zoo import shipped  # noqa: E402

SHIP_BUDGET_BYTES = 25_000_000


@pytest.fixture(scope="module")
def built_smoke(tmp_path_factory):
    return zoo.build_zoo(tmp_path_factory.mktemp("zoo") / "built", seed=0, smoke=True, progress=False)


@pytest.fixture()
def shipped_smoke(built_smoke, tmp_path, monkeypatch):
    """The smoke zoo shipped into a temporary package folder, which the library then treats as the shipped zoo."""
    target = shipped.ship_zoo(built_smoke, tmp_path / "shipped" / "mini")
    monkeypatch.setattr(shipped, "SHIPPED_ZOO_DIR", target)
    return target


def test_build_records_hashes_and_kernel(built_smoke):
    m = zoo.read_manifest(built_smoke)
    assert set(m["data_sha256"]) == set(m["task_names"])
    assert m["files"] == shipped.zoo_file_hashes(built_smoke)
    assert any(rel.startswith("finetuned/") for rel in m["files"]) and "pretrained/model.safetensors" in m["files"]
    assert m["kernel"]["torch_cpu_capability"]
    assert m["recipe_fingerprint"] == shipped.recipe_fingerprint(zoo.mini_config(smoke=True))


def test_materialised_zoo_equals_the_built_one(built_smoke, shipped_smoke, tmp_path):
    assert shipped.ships(0, True, "fp32") and not shipped.ships(1, True, "fp32")
    out = zoo.build_zoo(tmp_path / "materialised", seed=0, smoke=True, progress=False)
    built, made = zoo.read_manifest(built_smoke), zoo.read_manifest(out)
    assert made["origin"]["shipped"] is True
    assert made["files"] == built["files"] == shipped.zoo_file_hashes(out)
    assert made["accuracy"] == built["accuracy"]
    for task in built["task_names"]:  # the regenerated datasets hold the same arrays
        for split in ("train", "test"):
            a, b = zoo.load_task_split(built_smoke, task, split), zoo.load_task_split(out, task, split)
            assert a[0].equal(b[0]) and a[1].equal(b[1])
    # reused while it holds the shipped files; a rebuild from scratch goes to a directory of its own
    assert zoo.build_zoo(out, seed=0, smoke=True, progress=False) == out
    report = shipped.compare_to_shipped(built_smoke)
    assert report["bit_identical"] and report["data_identical"]
    assert "bit-identical" in shipped.format_comparison(report)


def test_comparison_reports_accuracy_differences(built_smoke, shipped_smoke, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(built_smoke, other)
    m = json.loads((other / "manifest.json").read_text())
    task = m["task_names"][0]
    m["accuracy"]["test"]["zero_shot"][task] += 2.5
    m["files"]["pretrained/model.safetensors"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(m))
    report = shipped.compare_to_shipped(other)
    assert not report["bit_identical"]
    assert report["accuracy_difference"]["test/zero_shot"][task] == 2.5
    assert f"{task} +2.5" in shipped.format_comparison(report)


def test_corrupted_shipped_file_is_named(shipped_smoke, tmp_path):
    victim = shipped_smoke / "finetuned" / zoo.read_manifest(shipped_smoke)["task_names"][1] / "model.safetensors"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(shipped.ZooIntegrityError, match=str(victim)):
        zoo.build_zoo(tmp_path / "m", seed=0, smoke=True, progress=False)


def test_corrupted_cached_file_is_named_at_load(built_smoke, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(built_smoke, copy)
    victim = copy / "pretrained" / "model.safetensors"
    victim.write_bytes(victim.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(shipped.ZooIntegrityError, match="pretrained/model.safetensors"):
        zoo.load_zoo_problem(copy)


def test_regenerated_data_that_differ_name_the_task(shipped_smoke, tmp_path):
    m = json.loads((shipped_smoke / "manifest.json").read_text())
    task = m["task_names"][2]
    m["data_sha256"][task] = "f" * 64
    (shipped_smoke / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(shipped.ZooIntegrityError, match=rf"\['{task}'\]"):
        zoo.build_zoo(tmp_path / "m", seed=0, smoke=True, progress=False)
    assert not (tmp_path / "m" / "manifest.json").exists()  # nothing is left that looks complete


def test_stale_format_is_loud(shipped_smoke):
    m = json.loads((shipped_smoke / "manifest.json").read_text())
    m["format_version"] = zoo.ZOO_FORMAT_VERSION - 1
    (shipped_smoke / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(shipped.StaleShippedZooError, match="make zoo-ship"):
        zoo.build_zoo(seed=0, smoke=True, progress=False)


def test_the_committed_zoo_is_complete_current_and_small():
    m = shipped.read_shipped_manifest()
    assert m is not None, "the package ships no mini zoo"
    assert (m["seed"], m["smoke"], m["format_version"]) == (0, False, zoo.ZOO_FORMAT_VERSION)
    shipped.check_files(shipped.SHIPPED_ZOO_DIR, m["files"])
    size = sum(p.stat().st_size for p in shipped.SHIPPED_ZOO_DIR.rglob("*") if p.is_file())
    assert size <= SHIP_BUDGET_BYTES, f"shipped zoo is {size / 1e6:.1f} MB, over the 25 MB budget"
    assert set(m["data_sha256"]) == set(m["task_names"]) and m["kernel"]["torch_cpu_capability"]


@pytest.mark.slow
def test_the_committed_zoos_data_regenerate_here():
    """The shipped zoo's data regenerate bit-identically on this machine (what materialising it relies on)."""
    m = shipped.read_shipped_manifest()
    cfg = zoo.mini_config()
    hashes = shipped.task_data_hashes(zoo.generate_task_data(cfg, m["seed"], progress=False))
    assert hashes == m["data_sha256"]
