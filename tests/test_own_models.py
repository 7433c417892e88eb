"""Issue 29: merging your own CLIP models on your own image folders (`merge --config`, `merge_own_models`).

End to end: the smoke zoo exported as PNG folders and class-name files and merged through the command gives
the library's own accuracy on the same data and seed. Then a tiny random CLIPModel (built here, no download)
for the output format, resuming, and every bad input answered in one line with nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from concrete_subspace.cli import main
from concrete_subspace.own_models import OwnModelsError, merge_own_models

TASKS = ("mnist", "digits")
STEPS = 3


def export_zoo_task(zoo_dir: Path, manifest: dict, task: str, root: Path) -> dict:
    """One zoo task's test split as <root>/<task>/<class>/<index>.png + classes.txt + templates.txt."""
    from concrete_subspace.mini_zoo.task_data import load_task_split

    images, labels = load_task_split(zoo_dir, task, "test")
    names = manifest["tasks"][task]["classnames"]
    folder = root / task / "images"
    for i, (image, label) in enumerate(zip(images.numpy(), labels.tolist(), strict=True)):
        (folder / names[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / names[label] / f"{i:05d}.png")
    (root / task / "classes.txt").write_text("\n".join(names) + "\n")
    (root / task / "templates.txt").write_text("\n".join(manifest["tasks"][task]["templates"]) + "\n")
    return {
        "images": str(folder),
        "classnames": str(root / task / "classes.txt"),
        "templates": str(root / task / "templates.txt"),
    }


@pytest.fixture(scope="module")
def smoke_zoo():
    from concrete_subspace.experiments import ensure_zoo

    zoo_dir = ensure_zoo(seed=0, smoke=True, progress=False)
    return zoo_dir, json.loads((zoo_dir / "manifest.json").read_text())


def test_exported_smoke_zoo_merged_by_the_command_matches_the_library_run(smoke_zoo, tmp_path, capsys):
    from transformers import CLIPModel

    from concrete_subspace.evaluation import evaluate
    from concrete_subspace.registry import run_method
    from concrete_subspace.zoo import load_zoo_problem

    zoo_dir, manifest = smoke_zoo
    config = {
        "models": {
            "pretrained": str(zoo_dir / "pretrained"),
            "finetuned": {t: str(zoo_dir / manifest["layout"]["finetuned"][t]) for t in TASKS},
        },
        "tasks": {t: export_zoo_task(zoo_dir, manifest, t, tmp_path / "data") for t in TASKS},
        "method": "concrete_task_arithmetic",
        "params": {"steps": STEPS, "log_every": 1},
        "seed": 0,
        "batch_size": 16,
        "out": str(tmp_path / "merged"),
    }
    # sort_keys=False: the config's task order is the problem's task order (batched forward concatenates the tasks'
    # batches in that order), so the library run below must see the same order to be bit-identical
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["merge", "--config", str(tmp_path / "merge.yaml"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Concrete Task Arithmetic" in printed and "mnist" in printed and "digits" in printed

    problem = load_zoo_problem(zoo_dir, tasks=TASKS, split="test", batch_size=16, seed=0)
    library = run_method("concrete_task_arithmetic", problem, steps=STEPS, log_every=1, progress=False)
    expected = evaluate(problem, library.state)
    report = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert report["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert [row["loss"] for row in report["history"]] == pytest.approx([row["loss"] for row in library.history])
    merged = CLIPModel.from_pretrained(tmp_path / "merged")
    for key, value in library.state.items():
        torch.testing.assert_close(merged.get_parameter(key), value, rtol=0, atol=0)
    from safetensors.torch import load_file

    torch.testing.assert_close(
        load_file(tmp_path / "merged" / "mask.safetensors")["mask_logits"], library.extras["mask_logits"]
    )
    assert not any(p.name.startswith(".merged") for p in tmp_path.iterdir())  # no resume or temp leftovers


# ------------------------------------------------------------------------------ a tiny random CLIP, built here
WORDS = ["a", "photo", "of", "the", "cat", "dog", "red", "blue", "green"]


def tiny_clip(seed: int = 0):
    """A randomly initialised CLIPModel (16x16 images, one layer per tower) and its word-level tokenizer."""
    from transformers import CLIPConfig, CLIPModel

    from concrete_subspace.mini_zoo.model import build_tokenizer

    torch.manual_seed(seed)
    tower = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(
            tower, vocab_size=len(WORDS) + 4, max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3
        ),
        vision_config=dict(tower, image_size=16, patch_size=8),
        projection_dim=8,
    )
    return CLIPModel(config).eval(), build_tokenizer(WORDS, 16)


def save_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Inputs as a user has them: pre-trained CLIP dir, two fine-tunes (HF dir, vision-only .safetensors),
    a labeled ImageFolder task and an unlabeled one with a class-name file; returns the config mapping."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("tiny")
    clip, tokenizer = tiny_clip()
    clip.save_pretrained(root / "pre")
    tokenizer.save_pretrained(root / "pre")
    rng = np.random.default_rng(0)
    for i, task in enumerate(("pets", "colors")):
        ft, _ = tiny_clip()
        with torch.no_grad():
            for p in ft.vision_model.parameters():
                p.add_(0.05 * (i + 1) * torch.randn_like(p))
        if task == "pets":
            ft.save_pretrained(root / "ft" / task)
        else:  # a CLIPVisionModel-style file without the vision_model. prefix
            state = {k: v.contiguous() for k, v in ft.vision_model.state_dict().items()}  # "encoder.layers..."
            save_file(state, str(root / "ft" / "colors.safetensors"))
    for j in range(12):
        save_image(
            root / "data" / "pets" / ("cat", "dog")[j % 2] / f"{j:03d}.png",
            rng.integers(0, 255, (20, 24, 3), dtype=np.uint8),
        )
        save_image(root / "data" / "colors" / f"{j:03d}.jpg", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    (root / "data" / "colors.txt").write_text("red\nblue\ngreen\n")
    config = {
        "models": {
            "pretrained": str(root / "pre"),
            "finetuned": {"pets": str(root / "ft" / "pets"), "colors": str(root / "ft" / "colors.safetensors")},
        },
        "tasks": {
            "pets": {"images": str(root / "data" / "pets")},
            "colors": {"images": str(root / "data" / "colors"), "classnames": str(root / "data" / "colors.txt")},
        },
        "method": "concrete_task_arithmetic",
        "params": {"steps": 2},
        "batch_size": 4,
    }
    return root, config


def test_tiny_concrete_merge_writes_a_loadable_model_mask_and_report(tiny, tmp_path):
    from safetensors.torch import load_file
    from transformers import CLIPModel

    report = merge_own_models(tiny[1], tmp_path / "out", progress=False)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert {"config.json", "model.safetensors", "mask.safetensors", "report.json", "tokenizer.json"} <= set(files)
    merged = CLIPModel.from_pretrained(tmp_path / "out")
    pretrained = CLIPModel.from_pretrained(tiny[0] / "pre")
    assert not torch.equal(
        merged.vision_model.encoder.layers[0].mlp.fc1.weight, pretrained.vision_model.encoder.layers[0].mlp.fc1.weight
    )
    torch.testing.assert_close(merged.text_projection.weight, pretrained.text_projection.weight, rtol=0, atol=0)
    assert load_file(tmp_path / "out" / "mask.safetensors")["mask_logits"].ndim == 1
    assert report["accuracy"]["colors"] is None and 0 <= report["accuracy"]["pets"] <= 100  # labels only for pets
    assert report["tasks"]["pets"]["classnames"] == ["cat", "dog"] and report["params"]["steps"] == 2
    assert {"entropy/pets", "entropy/colors"} <= set(report["history"][-1]) and "torch" in json.dumps(report)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["accuracy"] == report["accuracy"]


def short_params(method: str) -> dict:
    from concrete_subspace.registry import get_method

    defaults = get_method(method).defaults
    return {k: 1 for k in ("steps", "meta_steps", "tta_steps") if k in defaults}


@pytest.mark.parametrize(
    "method",
    [
        "weight_averaging",
        "task_arithmetic",
        "ties_merging",
        "task_wise_adamerging",
        "layer_wise_adamerging",
        "task_wise_adamerging_pp",
        "layer_wise_adamerging_pp",
        "task_wise_concrete_adamerging",
        "layer_wise_concrete_adamerging",
    ],
)
def test_every_test_time_method_runs_from_a_config(tiny, tmp_path, method):
    report = merge_own_models(
        {**tiny[1], "method": method, "params": short_params(method)}, tmp_path / "out", progress=False
    )
    assert report["method"] == method and (tmp_path / "out" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "mask.safetensors").is_file() == ("concrete" in method)


def test_an_interrupted_run_resumes_where_it_stopped(tiny, tmp_path, monkeypatch):
    import dataclasses

    from concrete_subspace import own_models

    params = {"steps": 4, "checkpoint_every": 1, "log_every": 1}
    clean = merge_own_models({**tiny[1], "params": params}, tmp_path / "clean", progress=False)
    build, seen, stop = own_models.build_problem, [], [True]

    def interrupted(config, **kw):
        problem, *rest = build(config, **kw)

        def batch(task, step):
            seen.append(step)
            if step == 2 and stop:
                stop.clear()  # once: the rerun goes through
                raise KeyboardInterrupt
            return problem.unlabeled_batch(task, step)

        return (dataclasses.replace(problem, unlabeled_batch=batch), *rest)

    monkeypatch.setattr(own_models, "build_problem", interrupted)
    with pytest.raises(KeyboardInterrupt):
        merge_own_models({**tiny[1], "params": params}, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and list(tmp_path.glob(".out.resume-*/checkpoint.ckpt"))
    seen.clear()
    resumed = merge_own_models({**tiny[1], "params": params}, tmp_path / "out", progress=False)
    assert 1 not in seen and {2, 3} <= set(seen)  # step 1 came from the checkpoint (step 0's batch is re-read)
    assert resumed["accuracy"] == clean["accuracy"]
    assert [r["loss"] for r in resumed["history"]] == pytest.approx([r["loss"] for r in clean["history"]])
    assert not list(tmp_path.glob(".out.*"))


# --------------------------------------------------------------------------------------- images: converted or refused
@pytest.mark.parametrize(
    "array,mode",
    [
        (np.full((20, 20), 200, dtype=np.uint8), "L"),
        (np.full((20, 20, 4), 200, dtype=np.uint8), "RGBA"),
        (np.full((20, 20), 200 * 257, dtype=np.uint16), "I;16"),
    ],
    ids=["grayscale", "rgba", "16-bit"],
)
def test_grayscale_rgba_and_16_bit_images_become_8_bit_rgb(tmp_path, array, mode):
    from concrete_subspace.own_models import read_image

    save_image(tmp_path / "x.png", array)
    assert Image.open(tmp_path / "x.png").mode == mode
    out = read_image(tmp_path / "x.png", 16, (16, 16), 10**6)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8 and np.all(out == 200)


def write_config(tmp_path: Path, config: dict, text: str | None = None) -> Path:
    path = tmp_path / "merge.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(config))
    return path


def break_input(kind: str, config: dict, tmp_path: Path) -> tuple[dict, str | None]:
    """A copy of the tiny config (data under tmp_path when it is modified) broken in one way; (config, yaml text)."""
    import copy
    import shutil

    config = copy.deepcopy(config)
    data = tmp_path / "data"
    shutil.copytree(Path(config["tasks"]["pets"]["images"]), data / "pets")
    config["tasks"]["pets"]["images"] = str(data / "pets")
    pets = data / "pets"
    if kind == "empty folder":
        shutil.rmtree(pets)
        pets.mkdir()
    elif kind == "missing folder":
        config["tasks"]["pets"]["images"] = str(data / "nope")
    elif kind == "unreadable image":
        (pets / "cat" / "bad.png").write_text("not an image")
    elif kind == "truncated image":
        good = (pets / "cat" / "000.png").read_bytes()
        (pets / "cat" / "000.png").write_bytes(good[: len(good) // 2])
    elif kind == "too large image":
        config["max_image_pixels"] = 100
    elif kind == "class list mismatch":
        (data / "pets.txt").write_text("cat\nbird\n")
        config["tasks"]["pets"]["classnames"] = str(data / "pets.txt")
    elif kind == "task without checkpoint":
        del config["models"]["finetuned"]["pets"]
    elif kind == "checkpoint without task":
        config["models"]["finetuned"]["birds"] = config["models"]["finetuned"]["pets"]
    elif kind == "duplicate task":
        text = yaml.safe_dump(config).replace("tasks:\n", "tasks:\n  colors:\n    images: x\n", 1)
        return config, text
    elif kind == "unknown key":
        config["tasks"]["pets"]["clasnames"] = "x"
    elif kind == "unknown parameter":
        config["params"] = {"step": 2}
    elif kind == "params not a mapping":
        config["params"] = ["steps=2"]
    return config, None


@pytest.mark.parametrize(
    "kind,needle",
    [
        ("empty folder", "has no images"),
        ("missing folder", "no such image folder"),
        ("unreadable image", "bad.png cannot be read"),
        ("truncated image", "000.png cannot be read"),
        ("too large image", "above max_image_pixels=100"),
        ("class list mismatch", "does not match the sub-folders"),
        ("task without checkpoint", "task 'pets' has no fine-tuned checkpoint"),
        ("checkpoint without task", "names 'birds', which is not a task"),
        ("duplicate task", "key 'colors' is given twice"),
        ("unknown key", "did you mean 'classnames'?"),
        ("unknown parameter", "Did you mean 'steps'?"),
        ("params not a mapping", "params must be a mapping"),
    ],
)
def test_bad_inputs_are_one_line_and_nothing_is_written(tiny, tmp_path, capsys, kind, needle):
    config, text = break_input(kind, tiny[1], tmp_path)
    path = write_config(tmp_path, config, text)
    code = main(["merge", "--config", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    with pytest.raises(OwnModelsError, match=needle.replace("?", r"\?").replace("[", r"\[")):
        merge_own_models(path, tmp_path / "out", progress=False)


def test_the_documented_example_config_uses_only_valid_keys_and_parameters():
    from concrete_subspace.own_models import MODEL_KEYS, TASK_KEYS, TOP_KEYS, check_keys, read_yaml
    from concrete_subspace.registry import resolve_params

    raw = read_yaml(Path(__file__).resolve().parents[1] / "docs" / "examples" / "merge.yaml")
    check_keys(raw, TOP_KEYS, "the config")
    check_keys(raw["models"], MODEL_KEYS, "models")
    for task in raw["tasks"].values():
        check_keys(task, TASK_KEYS, "task")
    assert set(raw["tasks"]) == set(raw["models"]["finetuned"])
    assert resolve_params(raw["method"], raw["params"])["steps"] == raw["params"]["steps"]


def test_command_line_flags_override_the_config(tiny, tmp_path, capsys):
    path = write_config(tmp_path, tiny[1])
    out = tmp_path / "out"
    assert main(["merge", "--config", str(path), "--out", str(out), "--param", "steps=1", "--quiet"]) == 0
    assert json.loads((out / "report.json").read_text())["params"]["steps"] == 1
    assert "accuracy pets" in capsys.readouterr().out  # the labeled task's accuracy is printed
    code = main(["merge", "--config", str(path), "--out", str(out), "--pretrained", str(tiny[0] / "pre")])
    assert code == 2 and "give the models in the config" in capsys.readouterr().err
