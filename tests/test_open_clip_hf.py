"""Issue 29: open_clip CLIP -> Hugging Face CLIPModel, checked numerically on a tiny random open_clip model.

The tiny architecture is registered with open_clip here (no download): the converted CLIPModel must give the same
image and text features, and the HF tokenizer built from open_clip's bundled BPE the same token ids.
"""

from __future__ import annotations

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
