"""Recurrent states inside a transformers ``Cache``: generation with a converted causal LM.

A causal student (GPT-NeoX with Mamba / Mamba2 mixers) keeps, per layer, a
fixed-size recurrent state instead of a growing KV cache. transformers'
``generate(..., use_cache=True)`` hands every layer the model's ``Cache``
object (a ``DynamicCache``); the student's attention wrapper
(:class:`~speechbrain_cald.convert.wrappers.CausalLMAttentionWrapper`) puts a
:class:`MixerStateLayer` in its layer's slot of that cache on the first call
and reads / advances it on every later call. So:

- the prompt is processed in one chunked pass that leaves each layer's state;
- each new token is one recurrent step (``Mamba.step``): time and memory per
  token do not depend on how long the prompt was;
- the cache reports the number of tokens seen (``get_seq_length``), so
  ``generate`` feeds only the new token and positions / masks stay right;
- beam search and ``num_return_sequences`` work: reordering, repeating and
  selecting batch rows apply to the states.

A state cannot be rolled back, so ``crop`` (assisted decoding) is refused.

Example
-------
>>> from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
>>> from speechbrain_cald.convert import to_linear_time
>>> cfg = GPTNeoXConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2,
...                     num_attention_heads=2, intermediate_size=32)
>>> student = to_linear_time(GPTNeoXForCausalLM(cfg), "mamba", d_state=4).eval()
>>> prompt = torch.tensor([[1, 2, 3, 4, 5]])
>>> with_state = student.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
>>> recomputed = student.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
>>> torch.equal(with_state, recomputed)
True
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

__all__ = ["MixerStateLayer", "mixer_state_layer", "state_nbytes"]


def _map_state(state: Optional[NamedTuple], fn: Callable[[torch.Tensor], torch.Tensor]):
    if state is None:
        return None
    return type(state)(*(fn(t) for t in state))


def state_nbytes(state: Optional[NamedTuple]) -> int:
    """Bytes held by a mixer state (0 for None).

    Example
    -------
    >>> from speechbrain_cald.nnet.mamba import MambaState
    >>> state_nbytes(MambaState(torch.zeros(1, 4, 2), torch.zeros(1, 4, 3)))
    80
    """
    return 0 if state is None else sum(t.numel() * t.element_size() for t in state)


class MixerStateLayer(CacheLayerMixin):
    """One layer's slot of a transformers ``Cache``, holding a token mixer's recurrent state.

    ``state`` is whatever the mixer returns with ``return_state=True`` (a
    NamedTuple of ``(B, ...)`` tensors, e.g. ``MambaState(conv, ssm)``);
    ``length`` counts the tokens it has absorbed.
    """

    is_compileable = False
    is_croppable = False
    supports_early_init = False

    def __init__(self, **kwargs: Any):
        super().__init__()
        self.state: Optional[NamedTuple] = None
        self.length = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length}, bytes={state_nbytes(self.state)})"

    # ------------------------------------------------------------ ours
    def advance(self, state: NamedTuple, tokens: int) -> None:
        """Store the state after ``tokens`` more tokens."""
        self.state = state
        self.length += int(tokens)
        self.is_initialized = True

    @property
    def batch_size(self) -> int:
        """Rows of the state (``-1`` before the first call)."""
        return -1 if self.state is None else int(self.state[0].shape[0])

    # ------------------------------------------------- Cache layer API
    def lazy_initialization(self, key_states=None, value_states=None) -> None:
        """Nothing to allocate ahead: the first call stores the state."""

    def update(self, key_states, value_states, *args, **kwargs):
        raise TypeError(
            "MixerStateLayer holds a token mixer's recurrent state, not keys and values: an attention "
            "layer was given the cache slot of a converted (linear-time) layer"
        )

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    def get_mask_sizes(self, query_length: int) -> tuple:
        # the same (kv_length, kv_offset) an attention layer with `length` cached tokens gives
        return self.length + query_length, 0

    def reset(self) -> None:
        self.state = None
        self.length = 0
        self.is_initialized = False

    def offload(self) -> None:
        self.state = _map_state(self.state, lambda t: t.to("cpu", non_blocking=True))

    def prefetch(self) -> None:
        device = getattr(self, "device", None)
        if device is not None:
            self.state = _map_state(self.state, lambda t: t.to(device, non_blocking=True))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.state = _map_state(self.state, lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.state = _map_state(self.state, lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.state = _map_state(self.state, lambda t: t[indices])

    def crop(self, tokens_to_remove: int) -> None:
        raise RuntimeError(
            "a recurrent mixer state cannot be rolled back (crop): assisted / speculative decoding "
            "is not supported for linear-time students"
        )


def mixer_state_layer(cache: Cache, layer_idx: int) -> MixerStateLayer:
    """The :class:`MixerStateLayer` in slot ``layer_idx`` of ``cache``, installed if needed.

    An empty slot (a fresh ``DynamicCache``'s layer, or none yet) becomes a
    ``MixerStateLayer``; a slot already holding keys and values is an error
    (the cache was filled by another model).

    Arguments
    ---------
    cache : transformers.cache_utils.Cache
        The cache the model was called with.
    layer_idx : int
        The layer's index in the model.

    Returns
    -------
    MixerStateLayer
    """
    if not isinstance(cache, Cache):
        raise TypeError(
            f"a linear-time student keeps its recurrent states in a transformers Cache, found "
            f"{type(cache).__name__} (pass cache=DynamicCache() or let generate create one)"
        )
    layers = cache.layers
    while len(layers) <= layer_idx:
        layers.append(MixerStateLayer())
    slot = layers[layer_idx]
    if isinstance(slot, MixerStateLayer):
        return slot
    if isinstance(slot, CacheLayerMixin) and slot.get_seq_length() > 0:
        raise ValueError(
            f"cache layer {layer_idx} already holds {slot.get_seq_length()} tokens of keys and values "
            f"({type(slot).__name__}): a linear-time student cannot continue another model's KV cache"
        )
    layers[layer_idx] = MixerStateLayer()
    return layers[layer_idx]
