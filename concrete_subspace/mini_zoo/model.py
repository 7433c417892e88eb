"""The mini CLIP's parts: word-level tokenizer, CLIPProcessor, uint8 images to pixel values, and its CLIPConfig."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..data import mini
from .config import MiniConfig


def build_tokenizer(words: Sequence[str], max_len: int):
    """Word-level tokenizer (lower-case, whitespace) wrapped as a transformers fast tokenizer; <bos> ... <eos>."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = {w: i for i, w in enumerate(specials + [w for w in words if w not in specials])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=max_len,
    )


def build_processor(tokenizer):
    """CLIPProcessor whose image part maps 28x28 RGB images to pixel values in [-1, 1] (see ``to_pixel_values``)."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    size = mini.IMAGE_SIZE
    image = CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": size},
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    return CLIPProcessor(image_processor=image, tokenizer=tokenizer)


def to_pixel_values(images: Tensor | np.ndarray) -> Tensor:
    """uint8 N x H x W x 3 images -> float N x 3 x H x W in [-1, 1] (identical to the saved CLIPProcessor)."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape N x H x W x 3, got {tuple(x.shape)} {x.dtype}")
    return (x.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5


def build_clip_config(cfg: MiniConfig, vocab_size: int):
    """The CLIPConfig of the mini model (vision ViT with 28x28 inputs, word-level text tower)."""
    from transformers import CLIPConfig

    text = dict(
        vocab_size=vocab_size,
        hidden_size=cfg.text_hidden,
        intermediate_size=2 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_text_len,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    vision = dict(
        hidden_size=cfg.vision_hidden,
        intermediate_size=cfg.vision_mlp,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=mini.IMAGE_SIZE,
        patch_size=cfg.patch_size,
        num_channels=3,
    )
    return CLIPConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=cfg.projection_dim,
        logit_scale_init_value=cfg.logit_scale_init,
    )
