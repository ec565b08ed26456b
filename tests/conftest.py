"""Shared fixtures: tiny random models built from configs (never downloaded) and the real data dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests never touch the network: the hub fallback must fail fast with its clear error instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TINY = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128)


def tiny_model(kind: str = "llama", seed: int = 0, **overrides):
    """A randomly initialised causal LM of the given family, in float32 on CPU."""
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "llama":
        config = tf.LlamaConfig(**{**TINY, **overrides})
    elif kind == "qwen2":
        config = tf.Qwen2Config(**{**TINY, **overrides})
    elif kind == "gpt2":
        config = tf.GPT2Config(vocab_size=256, n_embd=32, n_layer=4, n_head=4, n_positions=128, bos_token_id=0,
                               eos_token_id=0, **overrides)
    elif kind == "qwen3":  # per-layer `layer_types` in its config
        config = tf.Qwen3Config(**{**TINY, "head_dim": 8, **overrides})
    elif kind == "gemma3":  # sliding/full attention pattern in `layer_types`
        config = tf.Gemma3TextConfig(**{**TINY, "head_dim": 8, "num_hidden_layers": 7, "sliding_window": 16,
                                        **overrides})
    elif kind == "opt":
        config = tf.OPTConfig(vocab_size=256, hidden_size=32, ffn_dim=64, num_hidden_layers=4,
                              num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=32,
                              bos_token_id=0, eos_token_id=0, pad_token_id=1,
                              **overrides)
    else:
        raise ValueError(kind)
    return tf.AutoModelForCausalLM.from_config(config).eval()


def byte_tokenizer():
    """A byte-level tokenizer with 256 tokens (one per byte): handles any text, needs no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=sorted(alphabet)[0])


@pytest.fixture
def gptqmodel():
    """Skips only the test that quantizes or loads GPTQ, so pure tests run without gptqmodel installed."""
    return pytest.importorskip("gptqmodel")


@pytest.fixture
def tiny_llama():
    return tiny_model("llama")


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    """A saved tiny Llama with a byte tokenizer: a local model folder as a user would pass with --model."""
    folder = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def tiny5(tmp_path) -> Path:
    """A saved 5-layer tiny Llama (hidden 64: GPTQ group size 32/64 divide it) with a byte tokenizer."""
    folder = tmp_path / "tiny5"
    tiny_model("llama", hidden_size=64, intermediate_size=128, num_hidden_layers=5).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def real_data_dir() -> Path | None:
    value = os.environ.get("COMPRESS_DATA_DIR")
    if value and Path(value).is_dir():
        return Path(value)
    guess = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the checkout
    return guess if guess.is_dir() else None


@pytest.fixture
def data_dir() -> Path:
    found = real_data_dir()
    if found is None:
        pytest.fail("the real data dir is missing: set COMPRESS_DATA_DIR to shared/data")
    return found
