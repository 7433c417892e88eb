"""The mini zoo: generators are deterministic, a smoke build has the documented layout, loads with transformers
alone, is reused from the cache, and an interrupted build is detected and rebuilt."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")

from concrete_subspace import zoo  # noqa: E402
from concrete_subspace.data import mini, mini_tasks  # noqa: E402

SMALL = mini.SplitSizes(train=20, validation=10, test=20)


@pytest.mark.parametrize("task", mini.TASK_NAMES)
def test_generators_deterministic_and_shaped(task):
    a = mini.make_task_split(task, "test", 3, SMALL)
    b = mini.make_task_split(task, "test", 3, SMALL)
    c = mini.make_task_split(task, "test", 4, SMALL)
    assert a[0].dtype == np.uint8 and a[0].shape[1:] == (mini.IMAGE_SIZE, mini.IMAGE_SIZE, 3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]), "a different seed must give different images"
    assert a[1].min() >= 0 and a[1].max() < len(mini.TASKS[task].classnames)


def test_real_splits_are_disjoint():
    y = mini_tasks.mnist_arrays()[1]
    idx = mini_tasks.real_split_indices(0, "mnist", y, mini.SplitSizes())
    sets = [set(idx[s].tolist()) for s in ("train", "validation", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(idx["test"]) >= 1000


def test_entropy_premise_statistics():
    labels = torch.tensor([0, 1, 0, 1])
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.2, 0.0], [0.1, 0.0]])  # last one wrong and uncertain
    out = zoo.entropy_premise(logits, labels)
    assert out["accuracy"] == 75.0
    assert out["entropy_wrong"] > out["entropy_correct"]
    assert out["spearman_entropy_error"] > 0 and out["auroc_entropy_error"] == 1.0


def test_pixel_values_match_saved_processor():
    from PIL import Image

    tok = zoo.build_tokenizer(mini.vocabulary(), 16)
    proc = zoo.build_processor(tok)
    x = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 3), dtype=np.uint8)
    pv = proc(images=[Image.fromarray(i) for i in x], return_tensors="pt")["pixel_values"]
    assert torch.allclose(pv, zoo.to_pixel_values(x), atol=1e-5)


@pytest.fixture(scope="module")
def smoke_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "mini"
    path = zoo.build_zoo(out, seed=0, smoke=True, progress=False, methods=False)
    return path


def test_smoke_layout_and_manifest(smoke_zoo):
    m = zoo.read_manifest(smoke_zoo)
    assert m["format_version"] == zoo.ZOO_FORMAT_VERSION and m["smoke"] is True and m["seed"] == 0
    assert len(m["task_names"]) >= 8
    for key in ("tasks", "accuracy", "entropy_premise", "versions", "build_seconds", "config", "layout"):
        assert key in m, key
    for split in ("validation", "test"):
        for method in ("zero_shot", "individual", "task_arithmetic"):
            assert set(m["accuracy"][split][method]) == set(m["task_names"]) | {"average"}
        assert "spearman_entropy_error" in m["entropy_premise"][split][m["task_names"][0]]
    assert (smoke_zoo / "pretrained" / "model.safetensors").exists()
    assert not (smoke_zoo / zoo.BUILDING_MARKER).exists()
    for task in m["task_names"]:
        assert (smoke_zoo / "finetuned" / task / "model.safetensors").exists()
        assert (smoke_zoo / "datasets" / task / "dataset_dict.json").exists()


def test_smoke_loads_with_transformers_alone(smoke_zoo):
    import datasets
    from transformers import CLIPModel, CLIPProcessor, CLIPVisionModel

    m = json.loads((smoke_zoo / "manifest.json").read_text())
    clip = CLIPModel.from_pretrained(smoke_zoo / "pretrained")
    proc = CLIPProcessor.from_pretrained(smoke_zoo / "pretrained")
    task = m["task_names"][0]
    vision = CLIPVisionModel.from_pretrained(smoke_zoo / "finetuned" / task)
    ds = datasets.load_from_disk(str(smoke_zoo / "datasets" / task))
    assert set(ds) == {"train", "validation", "test"}
    from PIL import Image

    img = Image.fromarray(np.asarray(ds["test"][0]["image"], dtype=np.uint8))
    prompts = [m["tasks"][task]["templates"][0].format(c) for c in m["tasks"][task]["classnames"]]
    batch = proc(text=prompts, images=[img], return_tensors="pt", padding=True)
    assert batch["input_ids"].ne(1).all(), "a zero-shot prompt word is missing from the tokenizer vocabulary"
    with torch.no_grad():
        out = clip(**batch)
        feats = vision(pixel_values=batch["pixel_values"]).pooler_output
    assert out.logits_per_image.shape == (1, len(prompts))
    assert feats.shape[-1] == clip.config.vision_config.hidden_size
    # the fine-tuned tower differs from the pre-trained one, keys match
    pre = clip.vision_model.state_dict()  # transformers 5: CLIPModel.vision_model is the CLIPVisionModel body
    ft = vision.state_dict()
    assert pre.keys() == ft.keys()
    assert any(not torch.equal(pre[k], ft[k]) for k in pre)


def test_smoke_problem(smoke_zoo):
    problem = zoo.load_zoo_problem(smoke_zoo, split="validation", batch_size=4)
    m = zoo.read_manifest(smoke_zoo)
    assert problem.task_names == tuple(m["task_names"])
    batch = problem.unlabeled_batch(problem.task_names[0], 0)
    assert batch.shape == (4, 3, 28, 28)
    assert torch.equal(batch, problem.unlabeled_batch(problem.task_names[0], 0))
    ft = problem.load_finetuned(problem.task_names[1])
    assert ft.keys() == problem.pretrained.keys()
    from concrete_subspace.evaluation import evaluate

    scores = evaluate(problem, tasks=problem.task_names[:2])
    for t, s in scores.items():  # the pre-trained weights reproduce the manifest's zero-shot accuracy
        assert s == pytest.approx(m["accuracy"]["validation"]["zero_shot"][t], abs=1e-6)
    with pytest.raises(ValueError, match="split"):
        zoo.load_zoo_problem(smoke_zoo, split="train")
    with pytest.raises(KeyError, match="not in this zoo"):
        zoo.load_zoo_problem(smoke_zoo, tasks=["imagenet"])


def test_cache_reuse_and_partial_detection(smoke_zoo, caplog, tmp_path):
    manifest_before = (smoke_zoo / "manifest.json").read_text()
    caplog.set_level(logging.INFO, logger="concrete_subspace")
    assert zoo.build_zoo(smoke_zoo, seed=0, smoke=True, progress=False, methods=False) == smoke_zoo
    assert "reusing" in caplog.text
    assert (smoke_zoo / "manifest.json").read_text() == manifest_before

    # an interrupted build: files without a manifest are never used, and are rebuilt
    partial = tmp_path / "partial"
    (partial / "finetuned" / "mnist").mkdir(parents=True)
    (partial / zoo.BUILDING_MARKER).write_text("interrupted")
    with pytest.raises(FileNotFoundError, match="not a complete"):
        zoo.load_zoo_problem(partial)
    assert zoo.zoo_state(partial, 0, True) == "partial"
    # another format version is not complete either
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"format_version": -1, "seed": 0, "smoke": True}))
    assert zoo.zoo_state(other, 0, True) == "partial"
    with pytest.raises(ValueError, match="format_version"):
        zoo.read_manifest(other)
    # a directory of unrelated files is refused, not deleted
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        zoo.build_zoo(foreign, smoke=True, progress=False, methods=False)
    assert (foreign / "notes.txt").exists()


def test_method_results_are_opt_in(smoke_zoo, tmp_path, caplog):
    """The default build records no method results; build_zoo(methods=True) adds them to a complete zoo, in place."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(smoke_zoo, copy)
    assert "methods" not in zoo.read_manifest(copy)
    caplog.set_level(logging.INFO, logger="concrete_subspace")
    assert zoo.build_zoo(copy, seed=0, smoke=True, progress=False, methods=True) == copy
    assert "computing its merge-method results" in caplog.text
    m = zoo.read_manifest(copy)
    assert set(m["methods"]) == {
        "task_arithmetic",
        "ties_merging",
        "concrete_task_arithmetic",
        "layer_wise_adamerging",
        "layer_wise_concrete_adamerging",
    }
    for name, row in m["methods"].items():
        assert "error" not in row, (name, row)
        assert set(row["test"]) == set(m["task_names"]) | {"average"}
        assert 0.0 <= row["test"]["average"] <= 100.0
    assert m["methods"]["task_arithmetic"]["params"]["scaling"] == zoo.MINI_DEFAULTS["task_arithmetic"]["scaling"]
    assert m["accuracy"] == zoo.read_manifest(smoke_zoo)["accuracy"]  # the zoo itself is untouched


@pytest.mark.slow
def test_smoke_build_deterministic(smoke_zoo, tmp_path):
    again = zoo.build_zoo(tmp_path / "again", seed=0, smoke=True, progress=False, methods=False)
    a, b = zoo.read_manifest(smoke_zoo), zoo.read_manifest(again)
    assert a["accuracy"] == b["accuracy"]
    assert a["entropy_premise"] == b["entropy_premise"] or json.dumps(a["entropy_premise"]) == json.dumps(
        b["entropy_premise"]
    )
