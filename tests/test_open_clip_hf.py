"""Issue 29: open_clip CLIP -> Hugging Face CLIPModel, checked numerically on a tiny random open_clip model.

The tiny architecture is registered with open_clip here (no download): the converted CLIPModel must give the same
image and text features, and the HF tokenizer built from open_clip's bundled BPE the same token ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from concrete_subspace.models.open_clip_hf import (  # noqa: E402
    OpenClipConversionError,
    hf_clip_from_open_clip,
    hf_tokenizer_from_open_clip_bpe,
    load_open_clip,
    vision_to_hf,
)

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
PROMPTS = ["a photo of a cat.", "A Photo of the big RED car!", "itap of a 3-wheel don't"]


@pytest.fixture(scope="module", params=[False, True], ids=["gelu", "quickgelu"])
def tiny_arch(request):
    """Name of a tiny open_clip architecture registered for this module (GELU and QuickGELU variants)."""
    name = "cs-tiny-test" + ("-quickgelu" if request.param else "")
    open_clip.factory._MODEL_CONFIGS[name] = {**TINY, **({"quick_gelu": True} if request.param else {})}
    yield name
    open_clip.factory._MODEL_CONFIGS.pop(name, None)


def tiny_model(arch: str, seed: int = 0):
    """The tiny open_clip CLIP with random (seeded) weights, perturbed so biases and norms are not trivial."""
    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_converted_clip_gives_open_clips_image_and_text_features(tiny_arch, tmp_path):
    model = tiny_model(tiny_arch)
    hf = hf_clip_from_open_clip(model)
    assert hf.config.vision_config.hidden_act == ("quick_gelu" if "quickgelu" in tiny_arch else "gelu")
    pixels = torch.randn(3, 3, 32, 32)
    tokenizer = hf_tokenizer_from_open_clip_bpe(tmp_path)
    tokens = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected_image = model.encode_image(pixels)
        expected_text = model.encode_text(open_clip.tokenize(PROMPTS))
        image = hf.get_image_features(pixel_values=pixels)
        text = hf.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    image = getattr(image, "pooler_output", image)
    text = getattr(text, "pooler_output", text)
    torch.testing.assert_close(image, expected_image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text, expected_text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hf.logit_scale, model.logit_scale.detach())


def test_hf_tokenizer_from_open_clip_bpe_gives_open_clips_token_ids(tmp_path):
    tokenizer = hf_tokenizer_from_open_clip_bpe(tmp_path)
    reference = open_clip.tokenize(PROMPTS)
    for prompt, row in zip(PROMPTS, reference, strict=True):
        ids = tokenizer(prompt)["input_ids"]
        assert ids == row[: len(ids)].tolist()
        assert row[len(ids) :].abs().sum() == 0  # the rest is open_clip's zero padding


def test_finetuned_open_clip_encoder_maps_onto_the_merged_vision_keys(tiny_arch):
    """A task_vectors-style fine-tune (``model.visual.*`` only) fills exactly the merged ``vision_model.*`` tensors."""
    from transformers import CLIPModel

    from concrete_subspace.models.clip_hf import ImageEncoder, merge_keys

    pretrained, finetuned = tiny_model(tiny_arch, seed=1), tiny_model(tiny_arch, seed=2)
    hf = CLIPModel(hf_clip_from_open_clip(pretrained).config).eval()
    encoder = ImageEncoder.from_clip(hf)
    encoder_state = {f"model.visual.{k}": v for k, v in finetuned.visual.state_dict().items()}
    converted = vision_to_hf(encoder_state)
    keys = merge_keys(encoder)
    assert sorted(k for k in converted if k.startswith("vision_model.")) == sorted(keys)
    with torch.no_grad():
        for k, p in encoder.named_parameters():
            p.copy_(converted["visual_projection.weight"] if k == "visual_projection.weight" else converted[k])
        pixels = torch.randn(2, 3, 32, 32)
        expected = torch.nn.functional.normalize(finetuned.encode_image(pixels), dim=-1)
        torch.testing.assert_close(encoder(pixels), expected, atol=1e-5, rtol=1e-5)


def test_load_open_clip_names_the_mismatching_key(tiny_arch, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny_model(tiny_arch).state_dict().items()}
    state["visual.proj"] = torch.zeros(5, 5)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(OpenClipConversionError, match="visual.proj has shape"):
        load_open_clip(tmp_path / "bad.safetensors", tiny_arch)
    with pytest.raises(OpenClipConversionError, match="unknown open_clip architecture 'no-such-arch'"):
        load_open_clip(tmp_path / "bad.safetensors", "no-such-arch")


def test_text_less_checkpoint_is_refused_with_the_reason(tiny_arch):
    from concrete_subspace.models.open_clip_hf import open_clip_to_hf_state

    state = {k: v for k, v in tiny_model(tiny_arch).state_dict().items() if not k.startswith("transformer.")}
    with pytest.raises(OpenClipConversionError, match="no text transformer"):
        open_clip_to_hf_state(state)


def write_open_clip_inputs(arch: str, root: Path) -> dict:
    """A full open_clip CLIP (safetensors), two task_vectors-style image-encoder fine-tunes, two image folders."""
    from PIL import Image
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny_model(arch).state_dict().items()}, str(root / "pre.safetensors"))
    rng = np.random.default_rng(0)
    finetuned = {}
    for seed, task in enumerate(("pets", "colors"), start=1):
        visual = tiny_model(arch, seed=seed).visual.state_dict()
        finetuned[task] = str(root / f"{task}.safetensors")
        save_file({f"model.visual.{k}": v.contiguous() for k, v in visual.items()}, finetuned[task])
        for label in ("a", "b"):
            (root / task / label).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / task / label / f"{i}.png")
    return {
        "models": {"pretrained": str(root / "pre.safetensors"), "open_clip_arch": arch, "finetuned": finetuned},
        "tasks": {task: {"images": str(root / task)} for task in finetuned},
        "method": "task_arithmetic",
        "params": {"scaling": 0.3},
        "batch_size": 4,
    }


def test_merge_from_open_clip_checkpoints_writes_a_hugging_face_clip(tiny_arch, tmp_path):
    """End to end: open_clip pre-trained + open_clip fine-tunes -> task arithmetic -> a CLIPModel directory whose
    vision tower is theta0 + 0.3 * sum of task vectors (mapped) and whose text features are open_clip's."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    from concrete_subspace.own_models import merge_own_models

    config = write_open_clip_inputs(tiny_arch, tmp_path)
    report = merge_own_models(config, tmp_path / "out", progress=False)
    merged = CLIPModel.from_pretrained(tmp_path / "out").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    processor = CLIPImageProcessor.from_pretrained(tmp_path / "out")
    assert processor.crop_size == {"height": 32, "width": 32} and report["config"]["open_clip_arch"] == tiny_arch
    assert set(report["accuracy"]) == {"pets", "colors"}

    pre = tiny_model(tiny_arch)
    fts = [tiny_model(tiny_arch, seed=s).visual.state_dict() for s in (1, 2)]
    expected = {k: v + 0.3 * sum(ft[k] - v for ft in fts) for k, v in pre.visual.state_dict().items() if k != "proj"}
    expected = {k: v for k, v in vision_to_hf({f"visual.{k}": v for k, v in expected.items()}).items()}
    merged_state = merged.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(merged_state[key], value, atol=1e-6, rtol=1e-6, msg=key)
    torch.testing.assert_close(merged.visual_projection.weight, pre.visual.proj.detach().t())  # stays pre-trained
    tokens = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        text = merged.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        torch.testing.assert_close(
            getattr(text, "pooler_output", text), pre.encode_text(open_clip.tokenize(PROMPTS)), atol=1e-5, rtol=1e-5
        )


def test_open_clip_config_needs_its_architecture_and_refuses_it_for_a_directory(tmp_path):
    from concrete_subspace.own_models import OwnModelsError, check_config

    config = {
        "models": {"pretrained": "pre.safetensors", "finetuned": {"t": "t.safetensors"}},
        "tasks": {"t": {"images": "img"}},
        "method": "task_arithmetic",
    }
    with pytest.raises(OwnModelsError, match="models.open_clip_arch"):
        check_config(config, tmp_path)
    config["models"] = {**config["models"], "pretrained": "clip_dir", "open_clip_arch": "ViT-B-32"}
    with pytest.raises(OwnModelsError, match="is for an open_clip checkpoint file"):
        check_config(config, tmp_path)
