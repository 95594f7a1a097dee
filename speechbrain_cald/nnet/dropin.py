"""Any token mixer behind SpeechBrain's attention call, as a drop-in ``self_att``.

SpeechBrain's encoder layers (``TransformerEncoderLayer.self_att``,
``ConformerEncoderLayer.mha_layer``) call their attention as
``attn(x, x, x, attn_mask=src_mask, key_padding_mask=src_key_padding_mask,
pos_embs=pos_embs)`` and unpack ``(output, weights)``; HyperMixing keeps the same
signature, and so does this wrapper.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch


def lengths_from_key_padding_mask(key_padding_mask: torch.Tensor) -> torch.Tensor:
    """Absolute lengths ``(B,)`` from a right-padding mask ``(B, T)`` (True = pad).

    Arguments
    ---------
    key_padding_mask : torch.Tensor
        Boolean ``(B, T)``, True at padded frames, which must all follow the
        valid ones.

    Returns
    -------
    torch.Tensor
        ``lengths (B,)``, long.

    Example
    -------
    >>> lengths_from_key_padding_mask(torch.tensor([[False, False, True], [False, False, False]]))
    tensor([2, 3])
    """
    if key_padding_mask.dim() != 2:
        raise ValueError(
            f"key_padding_mask must be (B, T), got shape {tuple(key_padding_mask.shape)}"
        )
    valid = ~key_padding_mask.bool()
    lengths = valid.sum(dim=1)
    expected = torch.arange(valid.shape[1], device=valid.device) < lengths[:, None]
    if not torch.equal(valid, expected):
        bad = (valid != expected).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(
            "key_padding_mask must mark right padding only (valid frames first, then "
            f"padding); rows {bad} are not of that form"
        )
    return lengths


class SpeechBrainAttention(torch.nn.Module):
    """Wrap ``mixer(x, lengths)`` in SpeechBrain's self-attention signature.

    Only self-attention is meaningful for a token mixer: ``key`` and ``value``
    must have the shape of ``query`` and are otherwise ignored; ``pos_embs`` is
    ignored (the mixers carry position through their recurrence).

    Arguments
    ---------
    mixer : torch.nn.Module
        Called as ``mixer(x (B, T, D), lengths (B,) or None) -> (B, T, D)``.
    ignore_attn_mask : bool
        A mixer cannot apply an arbitrary ``(T, T)`` attention mask; by default a
        non-None ``attn_mask`` is an error, with True it is ignored.

    Example
    -------
    >>> from speechbrain_cald.nnet.mamba2 import Mamba2
    >>> att = SpeechBrainAttention(Mamba2(16, d_state=8, expand=1, headdim=8))
    >>> x = torch.randn(2, 5, 16)
    >>> pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    >>> out, weights = att(x, x, x, key_padding_mask=pad)
    >>> out.shape, weights
    (torch.Size([2, 5, 16]), None)
    """

    def __init__(self, mixer: torch.nn.Module, ignore_attn_mask: bool = False) -> None:
        super().__init__()
        self.mixer = mixer
        self.ignore_attn_mask = ignore_attn_mask

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: Optional[torch.Tensor] = None,
        key_padding_mask: Optional[torch.Tensor] = None,
        pos_embs: Optional[torch.Tensor] = None,
        return_attn_weights: bool = True,
    ) -> Tuple[torch.Tensor, None]:
        """Run the mixer on ``query (B, T, D)``.

        Arguments
        ---------
        query, key, value : torch.Tensor
            ``(B, T, D)``; self-attention, so the mixer reads ``query``.
        attn_mask : torch.Tensor, optional
            Must be None unless ``ignore_attn_mask``.
        key_padding_mask : torch.Tensor, optional
            ``(B, T)``, True at (right) padding.
        pos_embs : torch.Tensor, optional
            Ignored.
        return_attn_weights : bool
            Accepted for signature compatibility; weights are always None.

        Returns
        -------
        output : torch.Tensor
            ``(B, T, D)``, 0 at padded frames.
        weights : None
            A mixer has no attention map.
        """
        if query.dim() != 3:
            raise ValueError(f"SpeechBrainAttention: query must be (B, T, D), got {tuple(query.shape)}")
        for name, tensor in (("key", key), ("value", value)):
            if tensor is not query and tensor.shape != query.shape:
                raise ValueError(
                    f"SpeechBrainAttention: {name} {tuple(tensor.shape)} differs from query "
                    f"{tuple(query.shape)}; a token mixer only does self-attention"
                )
        if attn_mask is not None and not self.ignore_attn_mask:
            raise ValueError(
                "SpeechBrainAttention: got an attn_mask of shape "
                f"{tuple(attn_mask.shape)}, which a token mixer cannot apply; build the "
                "encoder without a src_mask (non-causal) or pass ignore_attn_mask=True"
            )
        lengths = None
        if key_padding_mask is not None:
            if key_padding_mask.shape != query.shape[:2]:
                raise ValueError(
                    f"SpeechBrainAttention: key_padding_mask must be (B, T) = "
                    f"{tuple(query.shape[:2])}, got {tuple(key_padding_mask.shape)}"
                )
            lengths = lengths_from_key_padding_mask(key_padding_mask)
        return self.mixer(query, lengths), None
