"""Recover absolute valid lengths from the padding masks model families pass to attention.

Every family hands its self-attention the padding information in its own form;
the mixers want ``lengths (B,)`` (absolute, right padding) or ``None`` (every
sequence full length). These functions are the one place that translates.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["lengths_from_valid", "lengths_from_attention_mask"]

# Additive masks put a large negative number on blocked keys: transformers' eager
# masks use the dtype's minimum, legacy ones -1e4. Anything above this is "attend".
_ADDITIVE_BLOCKED_BELOW = -1.0e3


def lengths_from_valid(valid: torch.Tensor, name: str = "mask") -> Optional[torch.Tensor]:
    """Turn a boolean ``valid (B, T)`` (True on valid frames) into lengths.

    Arguments
    ---------
    valid : torch.Tensor
        ``(B, T)`` boolean, True on valid frames; must be right-padded.
    name : str
        What the mask is, for the error message.

    Returns
    -------
    torch.Tensor or None
        ``lengths (B,)`` long, or ``None`` when every sequence is full length
        (so mixers can take their unmasked path).

    Raises
    ------
    ValueError
        If the valid frames of a sequence are not a prefix (left padding or holes).

    Example
    -------
    >>> lengths_from_valid(torch.tensor([[True, True, False], [True, True, True]]))
    tensor([2, 3])
    >>> lengths_from_valid(torch.ones(2, 3, dtype=torch.bool)) is None
    True
    """
    valid = valid.bool()
    T = valid.shape[-1]
    lengths = valid.sum(-1).long()
    prefix = torch.arange(T, device=valid.device)[None, :] < lengths[:, None]
    if not torch.equal(prefix, valid):
        raise ValueError(
            f"{name}: expected right-padded sequences (valid frames first, padding at the end), "
            f"found a mask whose valid frames are not a prefix: {valid.int().tolist()[:4]}... "
            "Linear-time mixers need right padding; pad on the right (tokenizer padding_side='right')."
        )
    if bool((lengths == T).all()):
        return None
    return lengths


def lengths_from_attention_mask(mask, T: int) -> Optional[torch.Tensor]:
    """Lengths from any mask form transformers passes to an attention module.

    Handles ``None`` (no padding: the SDPA path drops full-batch masks), a 2D
    padding mask ``(B, T)`` (1 / True on valid; flash-attention and WavLM form),
    a 4D boolean mask ``(B, 1|H, Tq, T)`` (True = attend; SDPA form) and a 4D
    additive float mask (0 = attend, very negative = blocked; eager form). A key
    position is valid if any query may attend to it, so bidirectional and causal
    masks both work.

    Arguments
    ---------
    mask : torch.Tensor or None
        The ``attention_mask`` argument the layer gave its attention.
    T : int
        Sequence length of the hidden states.

    Returns
    -------
    torch.Tensor or None
        ``lengths (B,)`` long, or ``None`` when nothing is padded.

    Example
    -------
    >>> valid = torch.tensor([[1, 1, 0], [1, 1, 1]])
    >>> lengths_from_attention_mask(valid, 3)
    tensor([2, 3])
    >>> sdpa = valid.bool()[:, None, None, :].expand(2, 1, 3, 3)
    >>> lengths_from_attention_mask(sdpa, 3)
    tensor([2, 3])
    >>> eager = torch.zeros(2, 1, 3, 3).masked_fill(~sdpa, torch.finfo(torch.float32).min)
    >>> lengths_from_attention_mask(eager, 3)
    tensor([2, 3])
    >>> lengths_from_attention_mask(None, 3) is None
    True
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(
            f"attention_mask: expected None or a torch.Tensor, found {type(mask).__name__} "
            "(flex-attention BlockMask is not supported: load the model with "
            "attn_implementation='sdpa' or 'eager')"
        )
    if mask.dim() == 2:
        valid = mask.bool() if mask.dtype == torch.bool else mask > 0
    elif mask.dim() == 4:
        attend = mask if mask.dtype == torch.bool else mask > _ADDITIVE_BLOCKED_BELOW
        valid = attend.any(dim=-2).any(dim=1)
    else:
        raise ValueError(
            f"attention_mask: expected a (B, T) padding mask or a (B, 1, Tq, T) attention mask, "
            f"found shape {tuple(mask.shape)}"
        )
    if valid.shape[-1] != T:
        raise ValueError(
            f"attention_mask: expected {T} key positions (the hidden states' length), "
            f"found {valid.shape[-1]} (shape {tuple(mask.shape)})"
        )
    return lengths_from_valid(valid, "attention_mask")
