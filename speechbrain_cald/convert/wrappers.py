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
    """A decoder LM's attention (GPT-NeoX), with the mixer's recurrent state in the model's cache.

    Without a cache (``layer_past=None``: training, scoring, ``use_cache=False``)
    the whole sequence is mixed in one pass, and a call that feeds only new
    tokens (``position_ids`` not starting at 0) is refused: without its prefix
    it would be mixed wrongly.

    With a cache (``generate(..., use_cache=True)``: the model passes its
    ``Cache`` as ``layer_past``), the wrapper keeps its mixer's state in slot
    ``layer_idx`` of that cache (:mod:`speechbrain_cald.convert.state_cache`):
    the first call mixes the prompt in one chunked pass and stores the state;
    each later call continues from it, one recurrent step (``mixer.step``) for
    a single new token. ``layer_idx`` is the layer's index in the model, set at
    conversion.

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
    ValueError: position_ids start at 2, not 0, and no cache was given: this linear-time student keeps its state in the model's cache, so continue a sequence with generate(..., use_cache=True) (or pass the Cache of the previous call), or run the whole sequence
    """

    def __init__(self, mixer: nn.Module, layer_idx: Optional[int] = None):
        super().__init__(mixer)
        self.layer_idx = layer_idx

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, position_ids=None, layer_past=None, **kwargs):
        if layer_past is not None:
            return self._continue(hidden_states, attention_mask, position_ids, layer_past), None
        if position_ids is not None and bool((position_ids[..., 0] != 0).any()):
            start = int(position_ids[..., 0].max())
            raise ValueError(
                f"position_ids start at {start}, not 0, and no cache was given: this linear-time student "
                "keeps its state in the model's cache, so continue a sequence with generate(..., "
                "use_cache=True) (or pass the Cache of the previous call), or run the whole sequence"
            )
        return super().forward(hidden_states, attention_mask=attention_mask, **kwargs)

    def _continue(self, x: torch.Tensor, attention_mask, position_ids, cache) -> torch.Tensor:
        """Mix ``x`` after the tokens this layer's cache slot has seen; advance the slot."""
        from speechbrain_cald.convert.state_cache import mixer_state_layer

        if self.layer_idx is None:
            raise RuntimeError(
                "CausalLMAttentionWrapper.layer_idx is not set: convert the model with to_linear_time "
                "(which numbers the layers) before generating with a cache"
            )
        slot = mixer_state_layer(cache, self.layer_idx)
        T = x.shape[1]
        # every layer gets the same positions: layer 0 checks them (one check per token, not per layer)
        if self.layer_idx == 0 and position_ids is not None and bool((position_ids[..., 0] != slot.length).any()):
            raise ValueError(
                f"layer {self.layer_idx}: the cache has seen {slot.length} tokens but position_ids "
                f"start at {int(position_ids[..., 0].max())}: feed only the tokens after the cached ones"
            )
        lengths = _new_token_lengths(attention_mask, T)
        step = getattr(self.mixer, "step", None)
        if T == 1 and slot.state is not None and step is not None and lengths is None:
            y, state = step(x[:, 0], slot.state)
            y = y.unsqueeze(1)
        else:
            try:
                y, state = self.mixer(x, lengths, state=slot.state, return_state=True)
            except TypeError as err:
                raise TypeError(
                    f"{type(self.mixer).__name__} cannot carry a state between calls "
                    "(forward(x, lengths, state=..., return_state=True)): generate with use_cache=False"
                ) from err
        slot.advance(state, T)
        return y


def _new_token_lengths(mask, T: int) -> Optional[torch.Tensor]:
    """Valid new tokens per sequence from the mask a cached call gets (keys = cached + new).

    Example
    -------
    >>> causal = torch.ones(1, 1, 2, 5, dtype=torch.bool).tril(3)  # 3 cached + 2 new
    >>> _new_token_lengths(causal, 2) is None
    True
    >>> _new_token_lengths(torch.tensor([[1, 1, 1, 1, 0]]), 2)
    tensor([1])
    """
    if mask is not None and isinstance(mask, torch.Tensor) and mask.dim() in (2, 4) and mask.shape[-1] > T:
        mask = mask[..., -T:]
    return lengths_from_attention_mask(mask, T)
