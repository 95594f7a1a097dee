"""Whisper as an assembled model: its text side, greedy decoding, and its encoder at any length.

``WhisperText`` is the tokenizer with the transcription prompt; ``log_mel``
the 30-second front end; ``greedy_decode`` the project's own decoding loop with a
key/value cache and CTranslate2's rules for Whisper (suppressed tokens always,
``begin_suppress_tokens`` at the first step, no timestamp tokens): the same
transcripts as ``ctranslate2.models.Whisper.generate(..., beam_size=1)``, which
``tests/unit/test_ctranslate2_whisper.py`` checks on real speech.

transformers' ``WhisperEncoder`` insists on 30-second inputs (3,000 mel frames,
1,500 positions). A linear-time student has no reason to: these functions run
the same modules (two convolutions, the sinusoidal positions, the layers, the
final norm) on any number of frames. Past the table's 1,500 rows the positions
are tiled (row ``t`` reads row ``t mod 1500``), the way the text recipes extend
a learned position table, so the teacher's cost past 30 s can be measured too
(what it would compute, not something it was trained for).
"""

from __future__ import annotations

import json
import os
from typing import Callable, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from speechbrain_cald.pretrained import local_source

__all__ = [
    "WhisperText",
    "encoder_frontend",
    "encoder_layers",
    "greedy_decode",
    "log_mel",
]


def encoder_frontend(encoder: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """``features (B, n_mels, 2T) -> (B, T, D)``: conv1, GELU, conv2 (stride 2), GELU, positions (tiled).

    Example
    -------
    >>> from transformers import WhisperConfig
    >>> from transformers.models.whisper.modeling_whisper import WhisperEncoder
    >>> enc = WhisperEncoder(WhisperConfig(d_model=8, encoder_layers=1, encoder_attention_heads=2,
    ...     encoder_ffn_dim=16, num_mel_bins=4, max_source_positions=5)).eval()
    >>> x = torch.randn(1, 4, 10)
    >>> ref = enc(x).last_hidden_state  # the same modules in the same order: a few roundings at most
    >>> out = encoder_layers(enc, encoder_frontend(enc, x))
    >>> bool((out - ref).abs().max() <= 64 * torch.finfo(ref.dtype).eps * ref.abs().max())
    True
    >>> encoder_frontend(enc, torch.randn(1, 4, 24)).shape  # longer than the 5 positions
    torch.Size([1, 12, 8])
    """
    x = nn.functional.gelu(encoder.conv1(features))
    x = nn.functional.gelu(encoder.conv2(x)).transpose(1, 2)
    table = encoder.embed_positions.weight
    idx = torch.arange(x.shape[1], device=x.device) % table.shape[0]
    return x + table[idx].to(x.dtype)


def encoder_layers(encoder: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``(B, T, D) -> (B, T, D)``: every encoder layer, then the final layer norm (no mask: Whisper has none)."""
    for layer in encoder.layers:
        out = layer(hidden, attention_mask=None)
        hidden = out[0] if isinstance(out, (tuple, list)) else out
    return encoder.layer_norm(hidden)


class WhisperText:
    """Whisper's tokenizer with the transcription prompt: text <-> token ids.

    Arguments
    ---------
    folder : str
        The model folder (``tokenizer.json`` + ``generation_config.json``).

    Attributes
    ----------
    prompt : list of int
        ``<|startoftranscript|>`` (+ ``<|en|><|transcribe|>`` for a multilingual
        model) + ``<|notimestamps|>``.
    eot : int
        ``<|endoftext|>``.
    """

    def __init__(self, folder: str):
        from transformers import GenerationConfig, WhisperTokenizerFast

        folder = str(local_source(folder, "Whisper tokenizer"))
        self.tokenizer = WhisperTokenizerFast.from_pretrained(folder, local_files_only=True)
        self.generation = GenerationConfig.from_pretrained(folder, local_files_only=True)
        vocab = self.tokenizer.get_vocab()
        self.eot = vocab["<|endoftext|>"]
        self.prompt = [vocab["<|startoftranscript|>"]]
        if getattr(self.generation, "is_multilingual", False):
            self.prompt += [vocab["<|en|>"], vocab["<|transcribe|>"]]
        self.no_timestamps = vocab["<|notimestamps|>"]
        self.prompt.append(self.no_timestamps)

    def encode(self, text: str) -> List[int]:
        """``prompt + tokens(" " + text) + [eot]`` (Whisper writes a space before the first word)."""
        return self.prompt + self.tokenizer.encode(" " + text.strip(), add_special_tokens=False) + [self.eot]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of generated ids (special tokens dropped)."""
        return self.tokenizer.decode([i for i in ids if i < self.eot], skip_special_tokens=True).strip()

    def suppressed(self, vocab_size: int) -> torch.Tensor:
        """``(V,)`` bool: tokens never generated (the model's ``suppress_tokens`` and every timestamp)."""
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[list(self.generation.suppress_tokens or [])] = True
        mask[self.no_timestamps:] = True  # <|notimestamps|> and the timestamps after it
        return mask


def log_mel(extractor, audio: np.ndarray) -> np.ndarray:
    """``(n_mels, 3000)`` float32 log-mel of one utterance, padded / cut to 30 s as Whisper reads it."""
    return extractor(audio, sampling_rate=16000, return_tensors="np").input_features[0].astype(np.float32)


@torch.no_grad()
def greedy_decode(model, features: torch.Tensor, text: WhisperText, max_new_tokens: int = 224) -> List[List[int]]:
    """Greedy transcripts of a batch of 30-second windows, with a key/value cache.

    Arguments
    ---------
    model : transformers.WhisperForConditionalGeneration
        Teacher or converted student (any encoder).
    features : torch.Tensor
        ``(B, n_mels, frames)`` log-mel windows.
    text : WhisperText
        The prompt and the suppression rules.
    max_new_tokens : int
        Longest transcript (Whisper: 448 positions, prompt included).

    Returns
    -------
    list of list of int
        Generated ids per window, ``<|endoftext|>`` excluded.
    """
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    model.eval()
    encoder = model.get_encoder()
    enc = encoder(features).last_hidden_state
    B = features.shape[0]
    limit = min(max_new_tokens, model.config.max_target_positions - len(text.prompt))
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    inputs = torch.tensor([text.prompt] * B, device=features.device)
    suppress = text.suppressed(model.config.vocab_size).to(features.device)
    begin = torch.zeros_like(suppress)
    begin[list(text.generation.begin_suppress_tokens or [])] = True
    out = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=features.device)
    for step in range(limit):
        hidden = model.model.decoder(input_ids=inputs, encoder_hidden_states=enc, past_key_values=cache,
                                     use_cache=True).last_hidden_state
        logits = model.proj_out(hidden[:, -1]).float()
        logits[:, suppress] = -float("inf")
        if step == 0:
            logits[:, begin] = -float("inf")
        nxt = logits.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, text.eot), nxt)
        for b in range(B):
            if not done[b] and int(nxt[b]) != text.eot:
                out[b].append(int(nxt[b]))
        done |= nxt == text.eot
        if bool(done.all()):
            break
        inputs = nxt[:, None]
    return out
