"""Modules that sit where a family's self-attention sat and run a token mixer.

Each wrapper accepts exactly the call its family's layer makes to attention,
recovers ``lengths (B,)`` from that family's padding mask, runs
``mixer(x, lengths)`` and returns what the layer unpacks. The mixer lives in
``wrapper.mixer`` so a student's state_dict reads ``<attention path>.mixer.*``.
SpeechBrain models use ``speechbrain_cald.nnet.dropin.SpeechBrainAttention``,
which follows the same rule.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from speechbrain_cald.convert.masks import lengths_from_attention_mask

__all__ = ["MixerWrapper", "HFAttentionWrapper", "WavLMAttentionWrapper", "CausalLMAttentionWrapper"]


class MixerWrapper(nn.Module):
    """Base: holds the mixer and its recovered-lengths call.

    Arguments
    ---------
    mixer : nn.Module
        ``y = mixer(x (B, T, D), lengths (B,) or None)``.
    """

    def __init__(self, mixer: nn.Module):
        super().__init__()
        self.mixer = mixer

    def mix(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        """Run the mixer on ``x (B, T, D)`` with ``lengths (B,)`` or None."""
        return self.mixer(x, lengths)


class HFAttentionWrapper(MixerWrapper):
    """Stands in for a transformers self-attention module.

    Accepts ``(hidden_states, attention_mask=None, **kwargs)`` where
    ``attention_mask`` is whatever the model's mask builder produced (None,
    2D padding mask, 4D boolean or 4D additive) and returns
    ``(output (B, T, D), None)`` as the attention modules of wav2vec2, HuBERT,
    Wav2Vec2-Conformer, Whisper, BERT, RoBERTa and GPT-NeoX do. Other keyword
    arguments (position embeddings, caches, ``encoder_hidden_states``) are
    accepted and ignored: the mixer needs no positions.

    Example
    -------
    >>> class CumMean(nn.Module):
    ...     def forward(self, x, lengths=None):
    ...         return x.cumsum(1) / torch.arange(1, x.shape[1] + 1)[None, :, None]
    >>> wrap = HFAttentionWrapper(CumMean())
    >>> y, w = wrap(torch.ones(2, 3, 4), attention_mask=None, position_embeddings=None)
    >>> y.shape, w
    (torch.Size([2, 3, 4]), None)
    """

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, **kwargs):
        lengths = lengths_from_attention_mask(attention_mask, hidden_states.shape[1])
        return self.mix(hidden_states, lengths), None


class WavLMAttentionWrapper(HFAttentionWrapper):
    """WavLM's attention returns ``(output, weights, position_bias)``; the
    position bias is passed through unchanged (None once attention is gone)."""

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, position_bias=None, **kwargs):
        lengths = lengths_from_attention_mask(attention_mask, hidden_states.shape[1])
        return self.mix(hidden_states, lengths), None, position_bias


class CausalLMAttentionWrapper(HFAttentionWrapper):
    """A decoder LM's attention (GPT-NeoX): refuses continuation calls.

    The mixer keeps no state between calls (no KV cache), so a call that feeds
    only new tokens — ``position_ids`` not starting at 0, as ``generate(...,
    use_cache=True)`` does after the first step — would silently mix them
    without their prefix. That is an error; the converter sets
    ``use_cache=False`` so ``generate`` recomputes the whole sequence.

    Example
    -------
    >>> class Id(nn.Module):
    ...     def forward(self, x, lengths=None):
    ...         return x
    >>> wrap = CausalLMAttentionWrapper(Id())
    >>> _ = wrap(torch.zeros(1, 2, 4), position_ids=torch.tensor([[0, 1]]))
    >>> wrap(torch.zeros(1, 1, 4), position_ids=torch.tensor([[2]]))
    Traceback (most recent call last):
    ...
    ValueError: position_ids start at 2, not 0: this linear-time student keeps no state between calls, so it cannot continue a sequence from a KV cache; run the whole sequence (generate(..., use_cache=False))
    """

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, position_ids=None, **kwargs):
        if position_ids is not None and bool((position_ids[..., 0] != 0).any()):
            start = int(position_ids[..., 0].max())
            raise ValueError(
                f"position_ids start at {start}, not 0: this linear-time student keeps no state "
                "between calls, so it cannot continue a sequence from a KV cache; run the whole "
                "sequence (generate(..., use_cache=False))"
            )
        return super().forward(hidden_states, attention_mask=attention_mask, **kwargs)
