"""Paper-scale adapters on tiny random models of the real classes (HF CLIP, open_clip, T5 + peft LoRA), offline.

Each family: models saved to a temporary directory exactly as the Hub/task_vectors files are laid out, loaded
through the adapter, key mapping and shapes checked, one merge method run end to end and evaluated.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from concrete_subspace.models import hub, memory, templates  # noqa: E402

TASKS = ("mnist", "eurosat")  # small label sets with fixed class names
WORDS = sorted(
    {w.strip(".,!:\"'").lower() for t in TASKS for s in templates.TEMPLATE_STRINGS[t] for w in s.split()}
    | {w.lower() for t in TASKS for n in templates.CLASSNAMES[t] for w in n.split()}
)


# ---------------------------------------------------------------------------------------------- fixtures


def word_tokenizer(words, pad="<pad>", eos="</s>", unk="<unk>", bos=None):
    """A tiny word-level fast tokenizer (real tokenizer class, no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = [pad, unk] + ([bos] if bos else [])
    vocab = {w: i for i, w in enumerate(specials + [w for w in words if w not in specials and w != eos] + [eos])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tk.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, vocab[eos])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token=pad, eos_token=eos, unk_token=unk)


def tiny_image_dataset(path: Path, task: str, n: int = 12, size: int = 40, seed: int = 0) -> Path:
    """A local ``save_to_disk`` dataset with an Image and a ClassLabel column, as the Hub test splits have."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = list(templates.CLASSNAMES[task])
    images = [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"image": images, "label": [i % len(names) for i in range(n)]}, features=features)
    ds.save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def vision_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision_data")
    return {t: tiny_image_dataset(root / t, t, seed=i) for i, t in enumerate(TASKS)}


@pytest.fixture(scope="module")
def hf_clip_dirs(tmp_path_factory):
    """Tiny CLIPModel (+ tokenizer, image processor) and one fine-tuned CLIPVisionModel per task, saved as on the Hub."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionModel

    root = tmp_path_factory.mktemp("hf_clip")
    tok = word_tokenizer(WORDS)
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=40,
            eos_token_id=2,
            bos_token_id=0,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    clip = CLIPModel(cfg).eval()
    clip.save_pretrained(root / "clip")
    tok.save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    finetuned = {}
    for i, task in enumerate(TASKS):
        vision = CLIPVisionModel(cfg.vision_config).eval()
        source = {k: v for k, v in clip.vision_model.state_dict().items()}
        g = torch.Generator().manual_seed(100 + i)
        state = {
            k: v + 0.02 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in source.items()
        }
        vision.load_state_dict(state, strict=False)
        vision.save_pretrained(root / f"ft_{task}")
        finetuned[task] = str(root / f"ft_{task}")
    return {"pretrained": str(root / "clip"), "finetuned": finetuned, "clip": clip}


# ---------------------------------------------------------------------------------------------- hub


def test_resolve_local_dir_and_offline_error(tmp_path, monkeypatch):
    assert hub.resolve(tmp_path) == tmp_path
    with pytest.raises(ValueError, match="revision"):
        hub.resolve(tmp_path, revision="abc")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(hub.NotCachedError) as err:
        hub.resolve("someone/not-cached-model", revision="v1.0", cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "someone/not-cached-model@v1.0" in message and "\n" not in message
    with pytest.raises(FileNotFoundError, match="neither an existing local path"):
        hub.resolve("no_such_dir_or_id")


def test_resolved_commit_and_memory_helpers(tmp_path):
    snap = tmp_path / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    assert hub.resolved_commit(snap) == "a" * 40
    assert hub.resolved_commit(tmp_path) is None
    assert memory.peak_memory_bytes("cpu") is None
    assert memory.as_dtype("bf16") is torch.bfloat16 and memory.as_dtype(None) is torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        memory.as_dtype("int8")
    with pytest.warns(UserWarning, match="vector_dtype"):
        memory.warn_low_precision_states(torch.bfloat16, "test")


# ---------------------------------------------------------------------------------------------- templates and data


def test_templates_and_classnames():
    prompts = [t("forest") for t in templates.templates("resisc45")]
    assert (
        len(prompts) == 18
        and prompts[0] == "satellite imagery of forest."
        and prompts[1] == "aerial imagery of forest."
    )
    assert prompts[6] == "satellite imagery of a forest." and prompts[-1] == "aerial view of the forest."
    assert templates.templates("mnist")[0]("7") == 'a photo of the number: "7".'
    for task in templates.VISION_TASKS:
        assert templates.templates(task)
        if task in templates.CLASSNAMES:
            assert len(templates.classnames(task)) == templates.NUM_CLASSES[task]
    assert templates.clean_classname("/b/bazaar/indoor") == "bazaar indoor"
    assert templates.clean_classname("a/airplane_cabin") == "airplane cabin"
    assert templates.clean_classname("AM General Hummer SUV 2000") == "AM General Hummer SUV 2000"
    with pytest.raises(ValueError, match="feature_names"):
        templates.classnames("sun397")
    with pytest.raises(ValueError, match="labels"):
        templates.classnames("mnist", [str(i) for i in range(9)])


def test_glue_prompts_match_fusion_bench():
    from concrete_subspace.data.paper import glue_prompt

    text, target = glue_prompt("rte", {"sentence1": "A cat sat.", "sentence2": "An animal sat.", "label": 0})
    assert text == "Does the text: 'A cat sat.' entail that 'An animal sat.' is true? Provide 'yes' or 'no'."
    assert target == "yes"
    assert glue_prompt("stsb", {"sentence1": "a", "sentence2": "b", "label": 3.8})[1] == "3.8"
    assert glue_prompt("mnli", {"premise": "p", "hypothesis": "h", "label": 2})[1] == "contradiction"
    assert glue_prompt("cola", {"sentence": "x", "label": -1})[1] == ""
    with pytest.raises(KeyError, match="lacks field"):
        glue_prompt("qqp", {"question1": "q", "label": 1})


def test_vision_test_set_from_local_dataset(vision_data):
    from concrete_subspace.data.paper import clip_image_transform, load_vision_test_set, task_classnames

    ds = load_vision_test_set(
        "eurosat", source=str(vision_data["eurosat"]), transform=clip_image_transform(32), limit=5
    )
    x, y = ds[3]
    assert len(ds) == 5 and x.shape == (3, 32, 32) and int(y) == 3
    assert task_classnames("eurosat", ds)[0] == "annual crop land"
    assert ds.labels.tolist() == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------- HF CLIP


def test_clip_hub_ids():
    from concrete_subspace.models.clip_hub import finetuned_id, pretrained_id

    assert pretrained_id("ViT-L-14") == "openai/clip-vit-large-patch14"
    assert finetuned_id("cars") == "tanganke/clip-vit-base-patch32_stanford-cars"
    assert finetuned_id("dtd", "ViT-L-14") == "tanganke/clip-vit-large-patch14_dtd"


@pytest.fixture(scope="module")
def clip_problem(hf_clip_dirs, vision_data):
    from concrete_subspace.data.paper import clip_image_transform, load_vision_test_set
    from concrete_subspace.models.clip_hub import build_clip_hub_problem

    test_sets = {
        t: load_vision_test_set(t, source=str(vision_data[t]), transform=clip_image_transform(32)) for t in TASKS
    }
    return build_clip_hub_problem(
        tasks=TASKS,
        pretrained=hf_clip_dirs["pretrained"],
        finetuned=hf_clip_dirs["finetuned"],
        test_sets=test_sets,
        device="cpu",
        batch_size=4,
        eval_batch_size=8,
    )


def test_clip_hub_problem_fields(clip_problem, hf_clip_dirs):
    p = clip_problem
    assert p.task_names == TASKS
    assert all(k.startswith("vision_model.") for k in p.pretrained) and len(p.pretrained) > 10
    ref = hf_clip_dirs["clip"].vision_model.state_dict()
    for k, v in p.pretrained.items():
        assert torch.equal(v, ref[k[len("vision_model.") :]]), k
    ft = p.load_finetuned("mnist")
    assert set(ft) == set(p.pretrained)
    assert all(ft[k].shape == p.pretrained[k].shape for k in ft)
    assert 0 < max((ft[k] - p.pretrained[k]).abs().max().item() for k in ft) < 0.2  # our +0.02 N(0,1) noise
    batch = p.unlabeled_batch("mnist", 0)
    assert batch.shape == (4, 3, 32, 32)
    logits = p.task_logits("eurosat", p.model(batch))
    assert logits.shape == (4, 10)
    assert p.info["family"] == "clip_hf"
    with pytest.raises(KeyError, match="no fine-tuned model"):
        p.load_finetuned("dtd")


def test_clip_head_matches_task_vectors_formula(hf_clip_dirs):
    """Head row = logit_scale * normalize(mean_t normalize(text_embed(template_t(class))))."""
    from transformers import AutoTokenizer

    from concrete_subspace.models.clip_hub import build_heads

    clip = hf_clip_dirs["clip"]
    tok = AutoTokenizer.from_pretrained(hf_clip_dirs["pretrained"])
    heads = build_heads(clip, tok, ["eurosat"], {"eurosat": templates.CLASSNAMES["eurosat"]})
    prompts = [t("forest") for t in templates.templates("eurosat")]
    with torch.no_grad():
        emb = torch.stack(
            [clip.get_text_features(**tok([s], return_tensors="pt")).pooler_output.reshape(-1) for s in prompts]
        )
    emb = emb / emb.norm(dim=-1, keepdim=True)
    row = emb.mean(0)
    expected = row / row.norm() * clip.logit_scale.exp()
    assert torch.allclose(heads["eurosat"][1], expected, atol=1e-5)


def test_clip_hub_merge_end_to_end(clip_problem):
    from concrete_subspace.evaluation import evaluate
    from concrete_subspace.registry import run_method

    result = run_method("task_arithmetic", clip_problem)
    assert set(result.state) >= set(clip_problem.pretrained)
    assert all(torch.isfinite(v).all() for v in result.state.values())
    scores = evaluate(clip_problem, result.state)
    assert set(scores) == set(TASKS) and all(0 <= s <= 100 for s in scores.values())


# ---------------------------------------------------------------------------------------------- open_clip (task_vectors)


def tiny_open_clip():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(1)
    return CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
    ).eval()


class _ImageEncoderLike(nn.Module):
    """Shape of task_vectors' ImageEncoder: the CLIP as ``.model`` with the text transformer deleted."""

    def __init__(self, clip):
        super().__init__()
        self.model = clip


@pytest.fixture(scope="module")
def task_vectors_dir(tmp_path_factory):
    """zeroshot.pt / <Dataset>/finetuned.pt as task_vectors lays them out, saved as (safe) state dicts."""
    import copy

    from concrete_subspace.models.open_clip_ckpt import TASK_DIRS

    root = tmp_path_factory.mktemp("task_vectors") / "ViT-B-32"
    clip = tiny_open_clip()
    encoder = _ImageEncoderLike(copy.deepcopy(clip))
    del encoder.model.transformer
    (root).mkdir(parents=True)
    torch.save(encoder.state_dict(), root / "zeroshot.pt")
    for i, task in enumerate(TASKS):
        g = torch.Generator().manual_seed(200 + i)
        state = {
            k: v + 0.02 * torch.randn(v.shape, generator=g) if k.startswith("model.visual.") else v
            for k, v in encoder.state_dict().items()
        }
        (root / TASK_DIRS[task]).mkdir()
        torch.save(state, root / TASK_DIRS[task] / "finetuned.pt")
    return root, clip


def test_open_clip_key_mapping(task_vectors_dir):
    from concrete_subspace.models.open_clip_ckpt import load_checkpoint, merged_to_visual, visual_to_merged

    root, clip = task_vectors_dir
    state = load_checkpoint(root / "zeroshot.pt")
    assert any(k.startswith("model.visual.") for k in state) and not any(
        k.startswith("model.transformer.") for k in state
    )
    merged = visual_to_merged(state)
    visual_keys = {f"vision_model.{k}" for k in clip.visual.state_dict()}
    assert set(merged) == visual_keys
    assert "vision_model.proj" in merged and "vision_model.transformer.resblocks.0.attn.in_proj_weight" in merged
    back = merged_to_visual(merged)
    assert all(torch.equal(back[k], clip.state_dict()[k]) for k in back)


def test_open_clip_problem_end_to_end(task_vectors_dir, vision_data):
    import open_clip

    from concrete_subspace.data.paper import clip_image_transform, load_vision_test_set
    from concrete_subspace.evaluation import evaluate
    from concrete_subspace.models.open_clip_ckpt import build_open_clip_problem, zero_shot_head
    from concrete_subspace.registry import run_method

    root, clip = task_vectors_dir
    test_sets = {
        t: load_vision_test_set(t, source=str(vision_data[t]), transform=clip_image_transform(32)) for t in TASKS
    }
    problem = build_open_clip_problem(
        root.parent,
        "ViT-B-32",
        TASKS,
        test_sets=test_sets,
        clip_model=clip,
        device="cpu",
        batch_size=4,
        eval_batch_size=8,
    )
    assert set(problem.pretrained) == {f"vision_model.{k}" for k, _ in clip.visual.named_parameters()}
    ft = problem.load_finetuned("eurosat")
    assert set(ft) == set(problem.pretrained) and all(ft[k].shape == v.shape for k, v in problem.pretrained.items())
    # features are normalize(encode_image(x)); logits = features @ head.T with the task_vectors head
    x = problem.unlabeled_batch("mnist", 0)
    feats = problem.model(x)
    assert torch.allclose(feats, torch.nn.functional.normalize(clip.encode_image(x), dim=-1), atol=1e-5)
    head = zero_shot_head(
        clip, open_clip.get_tokenizer("ViT-B-32"), templates.CLASSNAMES["mnist"], templates.templates("mnist")
    )
    assert head.shape == (10, 16)
    assert torch.allclose(problem.task_logits("mnist", feats), feats @ head.T, atol=1e-4)
    result = run_method("task_arithmetic", problem)
    scores = evaluate(problem, result.state)
    assert set(scores) == set(TASKS)


def test_open_clip_refuses_pickled_module_without_opt_in(tmp_path, task_vectors_dir):
    from concrete_subspace.models.open_clip_ckpt import UnsafeCheckpointError, load_checkpoint

    _, clip = task_vectors_dir
    # a whole pickled module whose class lives in task_vectors' `src.modeling` (not importable at load time)
    fake_src, fake_modeling = types.ModuleType("src"), types.ModuleType("src.modeling")
    ImageEncoder = type("ImageEncoder", (nn.Module,), {"__module__": "src.modeling"})
    fake_modeling.ImageEncoder = ImageEncoder
    sys.modules.update({"src": fake_src, "src.modeling": fake_modeling})
    try:
        module = ImageEncoder()
        module.model = clip
        torch.save(module, tmp_path / "finetuned.pt")
    finally:
        del sys.modules["src"], sys.modules["src.modeling"]
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle=True"):
        load_checkpoint(tmp_path / "finetuned.pt")
    with pytest.warns(UserWarning, match="allow_pickle=True"):
        state = load_checkpoint(tmp_path / "finetuned.pt", allow_pickle=True)
    assert torch.equal(state["model.visual.conv1.weight"], clip.state_dict()["visual.conv1.weight"])


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_even_with_opt_in(tmp_path):
    from concrete_subspace.models.open_clip_ckpt import UnsafeCheckpointError, convert_checkpoint, load_checkpoint

    marker = tmp_path / "pwned"
    torch.save({"weight": torch.zeros(2), "payload": _Exploit(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(tmp_path / "evil.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(pickle.UnpicklingError, match="os.system|posix.system|refusing"):
            load_checkpoint(tmp_path / "evil.pt", allow_pickle=True)
        with pytest.raises(pickle.UnpicklingError):
            convert_checkpoint(tmp_path / "evil.pt", tmp_path / "evil.safetensors", allow_pickle=True)
    assert not marker.exists()


def test_convert_checkpoint_to_safetensors(tmp_path, task_vectors_dir):
    from concrete_subspace.models.open_clip_ckpt import convert_checkpoint, load_checkpoint

    root, _ = task_vectors_dir
    out = convert_checkpoint(root / "zeroshot.pt", tmp_path / "zeroshot.safetensors")
    a, b = load_checkpoint(root / "zeroshot.pt"), load_checkpoint(out)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------- open_clip via the notebooks


@pytest.fixture
def paper_vision_offline(monkeypatch, task_vectors_dir, vision_data):
    """The paper-scale loaders pointed at local stand-ins: the tiny open_clip instead of the 'openai' download
    (zeroshot.pt has no text tower, so the heads need one) and the tiny saved datasets instead of the Hub ids."""
    import copy

    import open_clip

    from concrete_subspace.data import paper
    from concrete_subspace.models import open_clip_ckpt

    _, clip = task_vectors_dir
    calls = []

    def fake_create_open_clip(arch, pretrained="openai", **kwargs):
        calls.append((arch, pretrained))
        return copy.deepcopy(clip), None, open_clip.get_tokenizer(arch)

    monkeypatch.setattr(open_clip_ckpt, "create_open_clip", fake_create_open_clip)
    for task in TASKS:
        monkeypatch.setitem(paper.VISION_DATASETS, task, paper.VisionDatasetSpec(str(vision_data[task])))
    return calls


def notebook_config(cls, **parameters):
    """A config built the way a notebook builds it: its defaults overridden by papermill parameters (config_from)."""
    from dataclasses import fields

    from concrete_subspace import experiments as ex

    namespace = {f.name: f.default for f in fields(cls)} | parameters
    return ex.config_from(cls, namespace)


def test_multitask_notebook_path_with_task_vectors_checkpoints(tmp_path, task_vectors_dir, paper_vision_offline):
    """`papermill 01_multitask_table.ipynb -p scale paper -p checkpoints <dir>`: config -> problem -> table -> JSON."""
    import time

    from concrete_subspace import experiments as ex

    root, _ = task_vectors_dir
    config = notebook_config(
        ex.MultitaskConfig,
        scale="paper",
        checkpoints=str(root.parent),
        tasks="mnist,eurosat",
        methods=["task_arithmetic"],
        figures_dir=str(tmp_path / "figures"),
        cache_dir=str(tmp_path / "cache"),
    )
    started = time.perf_counter()
    table, records = ex.run_multitask(config)
    assert paper_vision_offline == [("ViT-B-32", "openai")]
    assert set(table["method"]) == {"zero_shot", "individual", "task_arithmetic"}
    assert set(table["task"]) == {*TASKS, "average"} and table["accuracy"].between(0, 100).all()
    assert records["task_arithmetic"].params["scaling"] == pytest.approx(0.3)
    out = ex.write_outputs(config, "01_multitask_table", {"multitask": table}, started=started, runs=records.values())
    payload = json.loads((out / "results.json").read_text())
    assert payload["config"]["checkpoints"] == str(root.parent)
    assert payload["models"] == {"scale": "paper", "arch": "ViT-B-32", "model": None, "checkpoints": str(root.parent)}
    saved = json.loads((records["task_arithmetic"].directory / "record.json").read_text())
    assert saved["context"]["family"] == "open_clip_task_vectors"  # the cache key tells the families apart


def test_load_problem_with_checkpoints_matches_the_builder(task_vectors_dir, paper_vision_offline):
    from concrete_subspace import experiments as ex

    root, clip = task_vectors_dir
    problem = ex.load_problem("paper", TASKS, "cpu", checkpoints=root.parent, batch_size=4, limit=5)
    assert problem.info["family"] == "open_clip_task_vectors" and problem.info["limit"] == 5
    assert problem.info["checkpoints"]["mnist"] == str(root / "MNIST" / "finetuned.pt")
    assert problem.unlabeled_batch("eurosat", 0).shape == (4, 3, 32, 32)  # the model's image size, not 224
    assert sum(len(y) for _, y in problem.eval_batches("mnist")) == 5
    ref = clip.visual.state_dict()
    assert all(torch.equal(v, ref[k.removeprefix("vision_model.")]) for k, v in problem.pretrained.items())


def test_robustness_notebook_path_with_task_vectors_checkpoints(tmp_path, task_vectors_dir, paper_vision_offline):
    from concrete_subspace import experiments as ex

    root, _ = task_vectors_dir
    config = notebook_config(
        ex.RobustnessConfig,
        scale="paper",
        checkpoints=str(root.parent),
        tasks=list(TASKS),
        methods="task_arithmetic",
        corruptions="gaussian_noise",
        cache_dir=str(tmp_path / "cache"),
    )
    table, records = ex.run_robustness(config)
    assert set(records) == {"clean/task_arithmetic", "gaussian_noise/task_arithmetic"}
    assert set(table["corruption"]) == {"clean", "gaussian_noise"} and table["accuracy"].between(0, 100).all()
    assert records["clean/task_arithmetic"].key != records["gaussian_noise/task_arithmetic"].key


def test_mask_notebook_path_with_task_vectors_checkpoints(tmp_path, task_vectors_dir, paper_vision_offline):
    """06_mask_analysis on the open_clip family: Concrete TA's entropy gradients reach the mask; densities per block."""
    from concrete_subspace import experiments as ex

    root, _ = task_vectors_dir
    config = notebook_config(
        ex.MaskConfig,
        scale="paper",
        checkpoints=str(root.parent),
        tasks=list(TASKS),
        steps=2,
        methods=["concrete_task_arithmetic"],
        cache_dir=str(tmp_path / "cache"),
    )
    problem = ex.problem_for(config)
    records = ex.run_methods(problem, config.methods, config)
    logits = records["concrete_task_arithmetic"].tensor("mask_logits")
    assert logits.numel() == sum(v.numel() for v in problem.pretrained.values()) and logits.abs().max() > 0  # init: 0
    density = ex.mask_density_table(records)
    assert set(density["layer"]) == {"embeddings", "layer 0", "layer 1", "ln_post", "proj"}
    assert density["density"].between(0, 1).all()
    masked = ex.masked_individuals(config, problem, records)
    assert set(masked["model"]) == {"individual", "masked by Concrete Task Arithmetic"}


def test_checkpoints_parameter_errors(tmp_path, task_vectors_dir):
    """Wrong scale, a missing folder and an incomplete one fail before any model is built, naming what is wrong."""
    import shutil

    from concrete_subspace import experiments as ex

    root, _ = task_vectors_dir
    with pytest.raises(ValueError, match="only at scale='paper'"):
        ex.load_problem("mini", TASKS, checkpoints=str(root.parent))
    with pytest.raises(ValueError, match="arch='flan-t5'"):
        ex.load_problem("paper", ("rte",), arch="flan-t5", checkpoints=str(root.parent))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ex.load_problem("paper", TASKS, checkpoints=str(tmp_path / "nowhere"))
    partial = tmp_path / "partial" / "ViT-B-32"
    shutil.copytree(root, partial)
    (partial / "EuroSAT" / "finetuned.pt").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete") as err:
        ex.load_problem("paper", TASKS, checkpoints=str(partial.parent))
    assert str(partial / "EuroSAT" / "finetuned.pt") in str(err.value) and "MNIST" not in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"zeroshot\.pt"):
        ex.load_problem("paper", TASKS, checkpoints=str(tmp_path / "partial" / "ViT-B-32" / "EuroSAT"))


def test_convert_checkpoint_dir_makes_safe_copies_the_loader_prefers(tmp_path, task_vectors_dir):
    import shutil

    from concrete_subspace.models.open_clip_ckpt import checkpoint_paths, convert_checkpoint_dir, load_checkpoint

    root, _ = task_vectors_dir
    copy_root = tmp_path / "ckpt" / "ViT-B-32"
    shutil.copytree(root, copy_root)
    torch.save({"weight": torch.randn(10, 16), "bias": torch.zeros(10)}, copy_root / "head_MNIST.pt")
    written = convert_checkpoint_dir(copy_root.parent, "ViT-B-32", TASKS)
    assert sorted(p.name for p in written) == ["finetuned.safetensors"] * 2 + [
        "head_MNIST.safetensors",
        "zeroshot.safetensors",
    ]
    paths = checkpoint_paths(copy_root.parent, "ViT-B-32", TASKS)
    assert all(p.suffix == ".safetensors" for p in paths.values())
    a, b = load_checkpoint(copy_root / "MNIST" / "finetuned.pt"), load_checkpoint(paths["mnist"])
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert convert_checkpoint_dir(copy_root.parent, "ViT-B-32", TASKS) == []  # already converted: nothing to do


# ---------------------------------------------------------------------------------------------- Flan-T5 + LoRA

GLUE_WORDS = (
    "yes no acceptable unacceptable positive negative entailment neutral contradiction 1.0 2.5 3.8 4.2 "
    "the a cat dog is was good bad sat ran sentence question text entail true provide or"
).split()


@pytest.fixture(scope="module")
def t5_dirs(tmp_path_factory):
    """Tiny T5ForConditionalGeneration + tokenizer, and a LoRA r=16 adapter (q, v) per task saved with peft."""
    import copy

    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import T5Config, T5ForConditionalGeneration

    root = tmp_path_factory.mktemp("t5")
    tok = word_tokenizer(GLUE_WORDS)
    cfg = T5Config(
        vocab_size=len(tok),
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        decoder_start_token_id=tok.pad_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
        feed_forward_proj="gated-gelu",
    )
    torch.manual_seed(2)
    base = T5ForConditionalGeneration(cfg).eval()
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    adapters = {}
    for i, task in enumerate(("rte", "stsb")):
        peft_model = get_peft_model(
            copy.deepcopy(base),
            LoraConfig(
                task_type=TaskType.SEQ_2_SEQ_LM, r=16, lora_alpha=32, target_modules=["q", "v"], lora_dropout=0.0
            ),
        )
        g = torch.Generator().manual_seed(300 + i)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
        peft_model.save_pretrained(root / f"lora_{task}")
        adapters[task] = str(root / f"lora_{task}")
    return {"base": str(root / "base"), "adapters": adapters, "tokenizer": tok, "model": base}


T5_DATA = {
    "rte": (
        ["the cat sat", "a dog ran", "the text is true", "the sentence was bad", "a cat is good"],
        ["yes", "no", "yes", "no", "yes"],
    ),
    "stsb": (
        ["the cat sat", "a dog ran", "the cat is good", "a dog was bad", "the text", "a question"],
        ["1.0", "2.5", "3.8", "4.2", "2.5", "1.0"],
    ),
}


@pytest.fixture(scope="module")
def t5_problem(t5_dirs):
    from concrete_subspace.models.flan_t5 import build_flan_t5_problem

    return build_flan_t5_problem(
        tasks=("rte", "stsb"),
        base=t5_dirs["base"],
        adapters=t5_dirs["adapters"],
        data=T5_DATA,
        device="cpu",
        batch_size=3,
        eval_batch_size=2,
    )


def test_flan_t5_ids():
    from concrete_subspace.models.flan_t5 import adapter_id, base_id

    assert base_id("large") == "google/flan-t5-large"
    assert adapter_id("cola") == "tanganke/flan-t5-base_glue-cola_lora-16"
    assert adapter_id("stsb", "large") == "tanganke/flan-t5-large_glue-stsb_lora-16"


def test_flan_t5_lora_states_match_peft_merge(t5_problem, t5_dirs):
    import copy

    from peft import PeftModel

    p = t5_problem
    assert len(p.pretrained) == 2 * 2 * 2 + 2 * 2  # q, v in 2 encoder self-attn + 2x2 decoder (self, cross) layers
    assert all(k.startswith("model.") and (k.endswith(".q.weight") or k.endswith(".v.weight")) for k in p.pretrained)
    ft = p.load_finetuned("rte")
    reference = PeftModel.from_pretrained(
        copy.deepcopy(t5_dirs["model"]), t5_dirs["adapters"]["rte"]
    ).merge_and_unload()
    ref = dict(reference.named_parameters())
    for k, v in ft.items():
        assert torch.allclose(v, ref[k[len("model.") :]], atol=1e-6), k
        assert not torch.equal(v, p.pretrained[k])  # LoRA-B was made non-zero


def test_flan_t5_first_step_entropy_inputs(t5_problem, t5_dirs):
    p = t5_problem
    batch = p.unlabeled_batch("rte", 0)
    assert set(batch) == {"input_ids", "attention_mask", "decoder_input_ids"}
    assert (
        batch["decoder_input_ids"].shape == (3, 1)
        and int(batch["decoder_input_ids"].max()) == t5_dirs["tokenizer"].pad_token_id
    )
    logits = p.task_logits("rte", p.model(**batch))
    assert logits.shape == (3, len(t5_dirs["tokenizer"]))
    full = t5_dirs["model"](**batch).logits[:, 0, :]
    assert torch.allclose(logits, full, atol=1e-5)
    assert p.unlabeled_batch("rte", 5)["input_ids"].equal(p.unlabeled_batch("rte", 5)["input_ids"])


def test_greedy_generate_matches_hf_generate(t5_dirs):
    from concrete_subspace.models.flan_t5 import greedy_generate

    tok, model = t5_dirs["tokenizer"], t5_dirs["model"]
    enc = tok(["the cat sat", "a dog ran is good"], padding=True, return_tensors="pt")
    ours = greedy_generate(model, enc["input_ids"], enc["attention_mask"], max_length=10)
    theirs = model.generate(**enc, max_length=10, do_sample=False, num_beams=1)
    assert tok.batch_decode(ours, skip_special_tokens=True) == tok.batch_decode(theirs, skip_special_tokens=True)


def test_glue_scores():
    from concrete_subspace.models.flan_t5 import exact_match, parse_float, spearman_rho

    assert exact_match(["yes", "no", "yes"], ["yes", "yes", "yes"]) == (2.0, 3)
    assert parse_float("3.8") == 3.8 and parse_float("abc") == 0.0
    assert spearman_rho(["1.0", "2.0", "3.0"], ["0.5", "1.0", "4.0"]) == pytest.approx(1.0)
    assert spearman_rho(["3.0", "2.0", "1.0"], ["0.5", "1.0", "4.0"]) == pytest.approx(-1.0)


def test_flan_t5_merge_end_to_end(t5_problem):
    from concrete_subspace.evaluation import evaluate
    from concrete_subspace.registry import run_method

    result = run_method("task_arithmetic", t5_problem)
    assert set(t5_problem.pretrained) <= set(result.state)
    batches = list(t5_problem.eval_batches("stsb"))
    assert len(batches) == 1 and batches[0][1].shape[0] == 6  # Spearman over the whole split
    assert len(list(t5_problem.eval_batches("rte"))) == 3
    scores = evaluate(t5_problem, result.state)
    assert set(scores) == {"rte", "stsb"}
    assert 0 <= scores["rte"] <= 100


def test_flan_t5_concrete_task_arithmetic_runs(t5_problem):
    """The entropy path: first-step logits over the vocabulary, gradients through functional_call to the mask."""
    from concrete_subspace.registry import run_method

    result = run_method("concrete_task_arithmetic", t5_problem, steps=2, log_every=1, progress=False)
    losses = [float(h["loss"]) for h in result.history if "loss" in h]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert all(loss > 0 for loss in losses)  # summed vocabulary entropies of the first decoder step
    assert all(torch.isfinite(v).all() for v in result.state.values())


def test_clip_hub_layer_wise_adamerging_runs(clip_problem):
    from concrete_subspace.registry import run_method

    result = run_method("layer_wise_adamerging", clip_problem, steps=2, log_every=1, progress=False)
    assert set(clip_problem.pretrained) <= set(result.state)
    assert all(torch.isfinite(v).all() for v in result.state.values())


# ---------------------------------------------------------------------------------------------- download


def test_download_plan_and_dry_run(capsys):
    from concrete_subspace.download import GROUPS, download_all, main, plan

    items = plan(["clip-b32", "flan-t5-large", "vision-data"])
    ids = [i.id for i in items]
    assert ids[0] == "openai/clip-vit-base-patch32" and "tanganke/clip-vit-base-patch32_stanford-cars" in ids
    assert "tanganke/flan-t5-large_glue-qqp_lora-16" in ids and "google/flan-t5-large" in ids
    assert ("ufldl-stanford/svhn", "cropped_digits") in {(i.id, i.config) for i in items}
    assert len(plan()) == 2 * 9 + 8 + 8 + 2 * 9 + 2 and len(GROUPS) == 7
    assert all(o.ok and o.detail == "dry run" for o in download_all(["glue"], dry_run=True, progress=False))
    assert main(["--what", "glue", "--dry-run"]) == 0
    assert main(["--what", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_download_verifies_offline_without_network(tmp_path, monkeypatch, hf_clip_dirs):
    from concrete_subspace.download import Item, download_all, fetch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    outcomes = download_all(
        ["clip-b32"], cache_dir=str(tmp_path / "empty_cache"), progress=False, manifest=tmp_path / "manifest.json"
    )
    assert len(outcomes) == 9 and not any(o.ok for o in outcomes)
    assert "openai/clip-vit-base-patch32@main" in outcomes[0].detail and "not in the local" in outcomes[0].detail
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["items"]) == 9 and manifest["items"][0]["ok"] is False
    local = fetch(Item("model", hf_clip_dirs["finetuned"]["mnist"]))
    assert local.ok and "tensors" in local.detail


def test_dataset_offline_error_names_id_config_and_split(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.NotCachedError, match=r"ufldl-stanford/svhn@main \(config 'cropped_digits', split 'test'\)"):
        hub.load_dataset_split("ufldl-stanford/svhn", "test", name="cropped_digits", cache_dir=str(tmp_path))
