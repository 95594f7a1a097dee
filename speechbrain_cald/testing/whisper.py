"""A tiny random Whisper for trying the Whisper recipes offline, as a CTranslate2 folder.

:func:`write_tiny_whisper` saves a random ``WhisperForConditionalGeneration``
(``save_pretrained``) with a byte-level BPE tokenizer trained on the spot and
Whisper's special tokens, then lets CTranslate2's own converter write the
folder a user would have (``model.bin``, ``config.json``, ``tokenizer.json``):
the input of ``python -m speechbrain_cald.pretrained.ctranslate2_whisper`` and of
``recipes/mini/Whisper/run.sh --pretrained_dir``.

    python -m speechbrain_cald.testing.whisper /tmp/tiny-whisper   # then --pretrained_dir /tmp/tiny-whisper/ct2
"""

from __future__ import annotations

import os
import sys
from typing import Tuple

import torch

__all__ = ["WHISPER_SPECIAL_TOKENS", "tiny_whisper_tokenizer", "write_tiny_whisper"]

WHISPER_SPECIAL_TOKENS = ["<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>",
                          "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def tiny_whisper_tokenizer(vocab_size: int = 300):
    """A byte-level BPE trained here (``tokenizers``), Whisper's special tokens after it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import WhisperTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the oceans are teeming with life", "he was not an ill disposed young man"] * 20,
                            trainer)
    fast = WhisperTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": WHISPER_SPECIAL_TOKENS[1:]})
    fast.add_tokens(["<|endoftext|>"], special_tokens=True)
    return fast


def write_tiny_whisper(root: str, d_model: int = 32, layers: int = 2, heads: int = 4, num_mel_bins: int = 80,
                       max_target_positions: int = 24, seed: int = 0, quantization: str = "float32") -> Tuple[object, str, str]:
    """``(model, <root>/hf, <root>/ct2)``: a random Whisper and the CTranslate2 folder of it.

    Arguments
    ---------
    root : str
        Created; gets ``hf/`` (``save_pretrained``) and ``ct2/`` (CTranslate2's converter).
    d_model, layers, heads : int
        Width, layers and attention heads of the encoder and the decoder (384 and 6 heads: tiny.en's
        geometry, which the recipe's BiMamba2 sizes expect).
    num_mel_bins : int
        80 as the real tiny.en (the recipes' feature extractor is built from it).
    max_target_positions : int
        Decoder positions: a random model rarely stops, so greedy decoding runs to this.
    seed : int
        The weights' seed.
    quantization : str
        CTranslate2's ``--quantization`` (``float32``, ``float16``, ``int8``).
    """
    import ctranslate2
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    tok = tiny_whisper_tokenizer()
    vocab = tok.get_vocab()
    eot, sot = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    torch.manual_seed(seed)
    config = WhisperConfig(vocab_size=max(vocab.values()) + 1 + 16, num_mel_bins=num_mel_bins, d_model=d_model,
                           encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
                           decoder_attention_heads=heads, encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model,
                           max_source_positions=1500, max_target_positions=max_target_positions, pad_token_id=eot,
                           bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot, suppress_tokens=[5, 7],
                           begin_suppress_tokens=[eot])
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # non-zero biases and norms, so a swapped or dropped one shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.generation_config = GenerationConfig(suppress_tokens=[5, 7], begin_suppress_tokens=[eot],
                                               decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot,
                                               no_timestamps_token_id=vocab["<|notimestamps|>"], is_multilingual=False)
    hf, ct2 = os.path.join(root, "hf"), os.path.join(root, "ct2")
    model.save_pretrained(hf)
    tok.save_pretrained(hf)
    ctranslate2.converters.TransformersConverter(hf, copy_files=["tokenizer.json"]).convert(
        ct2, quantization=quantization, force=True)
    return model, hf, ct2


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m speechbrain_cald.testing.whisper ROOT")
    print(write_tiny_whisper(sys.argv[1])[2])
