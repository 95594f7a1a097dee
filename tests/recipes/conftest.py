"""Fixtures of the recipe tests: a tiny Pythia-style checkpoint and a JSON-lines corpus."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from lm_corpus import lm_documents  # noqa: E402

@pytest.fixture(scope="session")
def tiny_pythia(tmp_path_factory):
    """A random 2-layer GPT-NeoX (hidden 32) with a BPE tokenizer, saved as a checkpoint folder."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from speechbrain_cald.data.bpe import train_bpe_tokenizer

    folder = tmp_path_factory.mktemp("pythia-tiny")
    tokenizer = train_bpe_tokenizer(lm_documents(200), 320, str(folder))
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, bos_token_id=0, eos_token_id=0,
    )
    GPTNeoXForCausalLM(config).save_pretrained(str(folder))
    return folder
