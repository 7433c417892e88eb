"""The pre-trained encoder of a mini-text zoo (all-MiniLM-L6-v2, or a tiny random BERT) and its merged keys."""

from __future__ import annotations

from ..mini_zoo.files import quiet_library_bars
from ..mini_zoo.shared import seeded_init
from .config import TextZooConfig


def load_base_encoder(cfg: TextZooConfig, seed: int):
    """(BertModel, tokenizer): all-MiniLM-L6-v2 from its package, or a seeded tiny random BERT (smoke)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from ..models.text_encoder import minilm_path

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if cfg.random_encoder is None:
        with quiet_library_bars():
            bert = BertModel.from_pretrained(path, add_pooling_layer=False)
    else:
        config = BertConfig(vocab_size=tokenizer.vocab_size, **cfg.random_encoder)
        bert = seeded_init(seed, lambda: BertModel(config, add_pooling_layer=False))
    return bert.eval(), tokenizer


def merge_keys_for(encoder, cfg: TextZooConfig) -> list[str]:
    """Merged keys: the LoRA-targeted weights ('lora'; all other task-vector entries are zero) or every float ('full')."""
    from ..models.text_encoder import float_keys

    keys = float_keys(encoder)
    if cfg.finetune == "full":
        return keys
    return [k for k in keys if k.endswith(".weight") and k.split(".")[-2] in cfg.target_modules]
