"""Tiny randomly initialised models saved to disk, for encoder and CLI tests (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = "a photo of the cat dog red blue car shirt shoe bag on in with".split()


def bert_tokenizer(folder: Path):
    """A word-piece tokenizer over a dozen words (enough for test sentences)."""
    from transformers import BertTokenizerFast

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab), model_max_length=16)


def make_tiny_hf_clip(folder: Path) -> Path:
    """A transformers CLIP (2 layers, width 32, 32x32 images, 16-d joint space) in ``folder``."""
    from transformers import CLIPConfig, CLIPModel

    tok = bert_tokenizer(folder)
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=2,
            eos_token_id=3,
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
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_mean": [0.4, 0.4, 0.4],
                "image_std": [0.3, 0.3, 0.3],
                "size": {"shortest_edge": 32},
                "crop_size": 32,
            }
        )
    )
    return folder


def make_tiny_sentence_transformer(folder: Path) -> Path:
    """A sentence-transformers model (1-layer BERT, width 24, mean pooling) saved in ``folder``."""
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 5.2
        from sentence_transformers.models import Pooling, Transformer

    base = folder / "bert"
    base.mkdir(parents=True, exist_ok=True)
    tok = bert_tokenizer(base)
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=48,
            max_position_embeddings=32,
        )
    ).save_pretrained(base)
    tok.save_pretrained(base)
    word = Transformer(str(base), max_seq_length=16)
    model = SentenceTransformer(modules=[word, Pooling(24, pooling_mode="mean")])
    out = folder / "model"
    model.save(str(out))
    return out


_BUILT: dict[str, Path] = {}


def shared_tiny_model(kind: str, tmp_path_factory) -> Path:
    """Build each tiny model once per test session (building imports transformers: slow)."""
    from conftest import require

    require("transformers", *(("sentence_transformers",) if kind == "st" else ()))
    if kind not in _BUILT:
        folder = tmp_path_factory.mktemp(kind)
        build = {"hf_clip": make_tiny_hf_clip, "st": make_tiny_sentence_transformer}[kind]
        _BUILT[kind] = build(folder)
    return _BUILT[kind]
