"""open_clip ViT CLIP -> Hugging Face ``CLIPModel`` / ``CLIPVisionModel`` state dicts, by an explicit key mapping.

Why: ``merge --config`` (:mod:`concrete_subspace.own_models`) merges and writes Hugging Face CLIP models; a user whose
pre-trained CLIP and fine-tunes are open_clip checkpoints (e.g. the paper's task_vectors encoders, converted to
safetensors with :func:`.open_clip_pickle.convert_checkpoint`) gets them converted here, and the output stays a
directory that ``CLIPModel.from_pretrained`` loads.

Mapping (open_clip -> Hugging Face), ``N`` the block index, one resblock mapped by :func:`resblock_to_hf`:

=========================================  =====================================================================
``visual.conv1.weight``                    ``vision_model.embeddings.patch_embedding.weight``
``visual.class_embedding``                 ``vision_model.embeddings.class_embedding``
``visual.positional_embedding``            ``vision_model.embeddings.position_embedding.weight``
``visual.ln_pre``                          ``vision_model.pre_layrnorm`` (sic, transformers' spelling)
``visual.transformer.resblocks.N``         ``vision_model.encoder.layers.N``
``visual.ln_post``                         ``vision_model.post_layernorm``
``visual.proj`` [width, embed]             ``visual_projection.weight`` [embed, width] (transposed)
``token_embedding.weight``                 ``text_model.embeddings.token_embedding.weight``
``positional_embedding``                   ``text_model.embeddings.position_embedding.weight``
``transformer.resblocks.N``                ``text_model.encoder.layers.N``
``ln_final``                               ``text_model.final_layer_norm``
``text_projection`` [width, embed]         ``text_projection.weight`` [embed, width] (transposed)
``logit_scale``                            ``logit_scale``
=========================================  =====================================================================

Within a resblock: ``ln_1`` -> ``layer_norm1``, ``attn.in_proj_{weight,bias}`` split in three along dim 0 ->
``self_attn.{q,k,v}_proj``, ``attn.out_proj`` -> ``self_attn.out_proj``, ``ln_2`` -> ``layer_norm2``,
``mlp.c_fc`` -> ``mlp.fc1``, ``mlp.c_proj`` -> ``mlp.fc2``.

Only the plain OpenAI-style ViT CLIP is supported (class-token pooling, argmax text pooling, no LayerScale, no
attentional pooler, no custom text tower); anything else is refused by :func:`check_supported`, naming the feature.
The activation (QuickGELU for OpenAI's weights, GELU otherwise) is not visible in the weights: it is read from the
open_clip model the checkpoint is loaded into, i.e. from the architecture name (``ViT-B-32-quickgelu`` vs
``ViT-B-32``).

Tokenizer: open_clip and HF CLIP use the same byte-level BPE (``bpe_simple_vocab_16e6``, 49408 tokens);
:func:`hf_tokenizer_from_open_clip_bpe` writes the ``vocab.json`` / ``merges.txt`` pair from the BPE file open_clip
ships, so no tokenizer file is downloaded and the output directory has a standard HF tokenizer.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from .open_clip_ckpt import strip_prefixes

RESBLOCK_PARTS = {
    "ln_1": "layer_norm1",
    "attn.out_proj": "self_attn.out_proj",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
#: open_clip's BPE token count and its two special tokens, with the names HF CLIP's vocab.json gives them.
BPE_MERGES = 49152 - 256 - 2
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


class OpenClipConversionError(ValueError):
    """An open_clip model or state dict this converter cannot map (named in the message)."""


# ---------------------------------------------------------------------------------------------- state dicts
def resblock_to_hf(state: Mapping[str, Tensor], src: str, dst: str) -> dict[str, Tensor]:
    """One open_clip resblock ``src`` (e.g. ``visual.transformer.resblocks.3.``) as HF encoder layer ``dst``."""
    out = {}
    for suffix in ("weight", "bias"):
        fused = _require(state, f"{src}attn.in_proj_{suffix}")
        if fused.shape[0] % 3:
            raise OpenClipConversionError(f"{src}attn.in_proj_{suffix} has shape {tuple(fused.shape)}, not 3 x width")
        for name, part in zip(("q", "k", "v"), fused.chunk(3, dim=0), strict=True):
            out[f"{dst}self_attn.{name}_proj.{suffix}"] = part.clone()
        for part, hf in RESBLOCK_PARTS.items():
            out[f"{dst}{hf}.{suffix}"] = _require(state, f"{src}{part}.{suffix}")
    return out


def vision_to_hf(state: Mapping[str, Tensor], layers: int | None = None) -> dict[str, Tensor]:
    """open_clip ``visual.*`` tensors -> HF ``vision_model.*`` (+ ``visual_projection.weight`` when ``visual.proj``).

    ``state`` may carry task_vectors' ``model.`` or DataParallel ``module.`` prefixes; ``layers`` defaults to the
    number of resblocks present. Keys outside ``visual.`` are ignored (a fine-tuned image encoder has none).
    """
    state = strip_prefixes(state)
    layers = _count_blocks(state, "visual.transformer.resblocks.") if layers is None else layers
    out = {
        "vision_model.embeddings.patch_embedding.weight": _require(state, "visual.conv1.weight"),
        "vision_model.embeddings.class_embedding": _require(state, "visual.class_embedding"),
        "vision_model.embeddings.position_embedding.weight": _require(state, "visual.positional_embedding"),
    }
    for src, dst in (("visual.ln_pre", "vision_model.pre_layrnorm"), ("visual.ln_post", "vision_model.post_layernorm")):
        for suffix in ("weight", "bias"):
            out[f"{dst}.{suffix}"] = _require(state, f"{src}.{suffix}")
    for n in range(layers):
        out.update(resblock_to_hf(state, f"visual.transformer.resblocks.{n}.", f"vision_model.encoder.layers.{n}."))
    if "visual.proj" in state:
        out["visual_projection.weight"] = state["visual.proj"].t().contiguous()
    return out


def text_to_hf(state: Mapping[str, Tensor], layers: int | None = None) -> dict[str, Tensor]:
    """open_clip text tower (top-level ``token_embedding``, ``transformer.*``, ...) -> HF ``text_model.*`` etc."""
    state = strip_prefixes(state)
    layers = _count_blocks(state, "transformer.resblocks.") if layers is None else layers
    if layers == 0:
        raise OpenClipConversionError(
            "the checkpoint has no text transformer (transformer.resblocks.*); task_vectors' zeroshot.pt drops it, "
            "so give the full open_clip CLIP checkpoint as models.pretrained"
        )
    projection = _require(state, "text_projection")
    out = {
        "text_model.embeddings.token_embedding.weight": _require(state, "token_embedding.weight"),
        "text_model.embeddings.position_embedding.weight": _require(state, "positional_embedding"),
        "text_model.final_layer_norm.weight": _require(state, "ln_final.weight"),
        "text_model.final_layer_norm.bias": _require(state, "ln_final.bias"),
        "text_projection.weight": projection.t().contiguous(),
        "logit_scale": _require(state, "logit_scale").reshape(()),
    }
    for n in range(layers):
        out.update(resblock_to_hf(state, f"transformer.resblocks.{n}.", f"text_model.encoder.layers.{n}."))
    return out


def open_clip_to_hf_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A whole open_clip CLIP state dict -> a HF ``CLIPModel`` state dict (both towers, projections, logit scale)."""
    return {**vision_to_hf(state), **text_to_hf(state)}


def _require(state: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise OpenClipConversionError(f"open_clip state dict has no {key!r} (keys start {sorted(state)[:3]})")
    return state[key]


def _count_blocks(state: Mapping[str, Tensor], prefix: str) -> int:
    """Number of consecutive resblocks ``prefix0.``, ``prefix1.``, ... present in ``state``."""
    indices = {int(k[len(prefix) :].split(".", 1)[0]) for k in state if k.startswith(prefix)}
    if indices != set(range(len(indices))):
        raise OpenClipConversionError(f"{prefix}* blocks are not numbered 0..{len(indices) - 1}: {sorted(indices)}")
    return len(indices)


# ---------------------------------------------------------------------------------------------- model and config
def check_supported(model: nn.Module) -> None:
    """Refuse open_clip models whose computation the HF CLIP classes do not reproduce, naming the feature."""
    visual = getattr(model, "visual", None)
    if visual is None or not hasattr(visual, "conv1") or not hasattr(visual, "transformer"):
        raise OpenClipConversionError("only open_clip ViT CLIP models convert (the visual tower has no conv1)")
    if not hasattr(model, "transformer") or not hasattr(model, "token_embedding"):
        raise OpenClipConversionError("only open_clip CLIP with the built-in text tower converts (not CustomTextCLIP)")
    checks = {
        "visual attentional pooler": getattr(visual, "attn_pool", None) is not None,
        f"visual pool_type {getattr(visual, 'pool_type', 'tok')!r}": getattr(visual, "pool_type", "tok") != "tok",
        "visual final_ln_after_pool": bool(getattr(visual, "final_ln_after_pool", False)),
        f"text pool_type {getattr(model, 'text_pool_type', 'argmax')!r}": getattr(model, "text_pool_type", "argmax")
        != "argmax",
        "text projection bias": isinstance(getattr(model, "text_projection", None), nn.Linear)
        and model.text_projection.bias is not None,
        "no ln_pre": isinstance(getattr(visual, "ln_pre", None), nn.Identity),
    }
    for tower in (visual.transformer, model.transformer):
        block = tower.resblocks[0]
        checks["LayerScale"] = checks.get("LayerScale", False) or not isinstance(block.ls_1, nn.Identity)
        checks["attention LayerNorm (scale_attn)"] = checks.get("attention LayerNorm (scale_attn)", False) or any(
            not isinstance(getattr(block, n, nn.Identity()), nn.Identity) for n in ("ln_attn", "ln_inner")
        )
        checks["non-standard attention"] = checks.get("non-standard attention", False) or not isinstance(
            block.attn, nn.MultiheadAttention
        )
    bad = [name for name, unsupported in checks.items() if unsupported]
    if bad:
        raise OpenClipConversionError(f"open_clip model uses {bad[0]}, which HF CLIPModel does not reproduce")


def activation(model: nn.Module) -> str:
    """HF ``hidden_act`` of an open_clip model: ``quick_gelu`` for open_clip's QuickGELU, else ``gelu``."""
    act = model.visual.transformer.resblocks[0].mlp.gelu
    if type(act).__name__ == "QuickGELU":
        return "quick_gelu"
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return "gelu"
    raise OpenClipConversionError(f"open_clip MLP activation {type(act).__name__} has no HF CLIP equivalent")


def clip_config(model: nn.Module):
    """A ``transformers.CLIPConfig`` with the open_clip model's dimensions (read from its modules, not a name)."""
    from transformers import CLIPConfig

    check_supported(model)
    visual, act = model.visual, activation(model)
    vblock, tblock = visual.transformer.resblocks[0], model.transformer.resblocks[0]
    embed_dim = visual.proj.shape[1] if visual.proj is not None else visual.transformer.width
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    patch = visual.patch_size[0] if isinstance(visual.patch_size, (tuple, list)) else visual.patch_size
    text_config = {
        "vocab_size": model.token_embedding.num_embeddings,
        "hidden_size": model.token_embedding.embedding_dim,
        "intermediate_size": tblock.mlp.c_fc.out_features,
        "num_hidden_layers": len(model.transformer.resblocks),
        "num_attention_heads": tblock.attn.num_heads,
        "max_position_embeddings": model.positional_embedding.shape[0],
        "hidden_act": act,
        "projection_dim": embed_dim,
        "bos_token_id": model.token_embedding.num_embeddings - 2,
        "eos_token_id": model.token_embedding.num_embeddings - 1,
    }
    vision_config = {
        "hidden_size": visual.transformer.width,
        "intermediate_size": vblock.mlp.c_fc.out_features,
        "num_hidden_layers": len(visual.transformer.resblocks),
        "num_attention_heads": vblock.attn.num_heads,
        "image_size": int(size),
        "patch_size": int(patch),
        "hidden_act": act,
        "projection_dim": embed_dim,
    }
    return CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=embed_dim)


def hf_clip_from_open_clip(model: nn.Module):
    """A ``transformers.CLIPModel`` (eval mode) computing the same image and text features as ``model``."""
    from transformers import CLIPModel

    config = clip_config(model)
    hf = CLIPModel(config).eval()
    state = open_clip_to_hf_state({k: v.detach().float() for k, v in model.state_dict().items()})
    expected = {k for k in hf.state_dict() if not k.endswith("position_ids")}
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise OpenClipConversionError(f"converted keys differ from CLIPModel: missing {missing[:3]}, extra {extra[:3]}")
    hf.load_state_dict(state, strict=False)
    return hf


def load_open_clip(path: str | os.PathLike, arch: str) -> nn.Module:
    """open_clip ``arch`` (random init, nothing downloaded) with the weights of ``path`` (safetensors / weights-only).

    The state dict must match the architecture exactly (task_vectors' ``model.`` prefix is dropped); a pickled
    whole-module file is refused by the safe loader (convert it once with ``open_clip_pickle.convert_checkpoint``).
    """
    import open_clip

    from ..state_io import load_state_dict

    if arch not in open_clip.list_models():
        raise OpenClipConversionError(f"unknown open_clip architecture {arch!r} (open_clip.list_models() lists them)")
    model = open_clip.create_model(arch, pretrained=None, device="cpu")
    state = strip_prefixes(load_state_dict(path))
    reference = model.state_dict()
    missing = [k for k in reference if k not in state and k != "attn_mask"]
    extra = [k for k in state if k not in reference]
    if missing or extra:
        raise OpenClipConversionError(
            f"{path} does not match open_clip {arch}: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for key, value in state.items():
        if value.shape != reference[key].shape:
            raise OpenClipConversionError(
                f"{path}: {key} has shape {tuple(value.shape)}, open_clip {arch} has {tuple(reference[key].shape)}"
            )
    model.load_state_dict(state, strict=False)
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------- tokenizer
def write_bpe_vocab(directory: str | os.PathLike, bpe_path: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``vocab.json`` and ``merges.txt`` for HF ``CLIPTokenizer``, built from open_clip's bundled BPE file.

    The vocabulary is built as open_clip's ``SimpleTokenizer`` builds it (byte symbols, their ``</w>`` forms, one
    token per merge, then the two special tokens), so token ids agree; the special tokens get HF's names.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(bpe_path or default_bpe()).read().decode("utf-8").split("\n")[1 : BPE_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(line.split()) for line in lines] + list(SPECIAL_TOKENS)
    directory = Path(directory)
    vocab_file, merges_file = directory / "vocab.json", directory / "merges.txt"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(vocab)}, ensure_ascii=False))
    merges_file.write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def hf_tokenizer_from_open_clip_bpe(directory: str | os.PathLike, context_length: int = 77):
    """A HF ``CLIPTokenizer`` (files written to ``directory``) giving open_clip's token ids for the same text."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_bpe_vocab(directory)
    return CLIPTokenizer(
        str(vocab_file),
        str(merges_file),
        model_max_length=context_length,
        bos_token=SPECIAL_TOKENS[0],
        eos_token=SPECIAL_TOKENS[1],
        unk_token=SPECIAL_TOKENS[1],
        pad_token=SPECIAL_TOKENS[1],
    )


def image_stats(model: nn.Module) -> tuple[list[float], list[float]]:
    """(mean, std) the open_clip model's preprocessing normalises with (OpenAI CLIP's unless the model sets them)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean = getattr(model.visual, "image_mean", None) or OPENAI_DATASET_MEAN
    std = getattr(model.visual, "image_std", None) or OPENAI_DATASET_STD
    return [float(x) for x in mean], [float(x) for x in std]
