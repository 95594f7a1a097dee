"""Read the q / k / v / out projections of the attention modules families use.

Each function returns ``{"q"|"k"|"v"|"o": Projection}`` with weights as they act on
``x (B, T, D)`` (``y = x @ W.T + b``), heads concatenated in the usual
``(num_heads * head_dim)`` row order. Used to copy weights into Linformer and
for ``init="attention"``.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from speechbrain_cald.convert.families.base import Projection

__all__ = ["named_linears", "split_head_interleaved", "split_stacked"]


def named_linears(names: Sequence[Optional[str]]):
    """A ``projections`` function reading ``nn.Linear`` attributes named for q, k, v, o.

    ``None`` for a role the module does not own.

    Example
    -------
    >>> class Att(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.q, self.k, self.v = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
    >>> sorted(named_linears(("q", "k", "v", None))(Att()))
    ['k', 'q', 'v']
    """
    roles = ("q", "k", "v", "o")

    def projections(attention: nn.Module) -> Dict[str, Projection]:
        out = {}
        for role, name in zip(roles, names):
            if name is None:
                continue
            linear = getattr(attention, name)
            out[role] = Projection(linear.weight, linear.bias)
        return out

    return projections


def split_head_interleaved(
    weight: torch.Tensor, bias: Optional[torch.Tensor], num_heads: int, parts: int = 3
) -> Tuple[Projection, ...]:
    """Split a fused projection laid out per head as ``[q_h, k_h, v_h]`` (GPT-NeoX,
    SpeechBrain's RelPosMHAXL self-attention path) into ``parts`` projections.

    Example
    -------
    >>> w = torch.arange(12.).view(6, 2)        # 2 heads, head_dim 1, parts q, k, v
    >>> q, k, v = split_head_interleaved(w, None, num_heads=2)
    >>> q.weight.tolist()
    [[0.0, 1.0], [6.0, 7.0]]
    """
    rows, d_in = weight.shape
    head_dim = rows // (num_heads * parts)
    w = weight.view(num_heads, parts, head_dim, d_in)
    b = bias.view(num_heads, parts, head_dim) if bias is not None else None
    return tuple(
        Projection(
            w[:, i].reshape(num_heads * head_dim, d_in),
            b[:, i].reshape(num_heads * head_dim) if b is not None else None,
        )
        for i in range(parts)
    )


def split_stacked(weight: torch.Tensor, bias: Optional[torch.Tensor], parts: int = 3) -> Tuple[Projection, ...]:
    """Split a fused projection laid out as ``[q; k; v]`` (``nn.MultiheadAttention``).

    Example
    -------
    >>> q, k, v = split_stacked(torch.arange(6.).view(6, 1), torch.arange(6.))
    >>> k.weight.flatten().tolist(), k.bias.tolist()
    ([2.0, 3.0], [2.0, 3.0])
    """
    ws = weight.chunk(parts, dim=0)
    bs = bias.chunk(parts, dim=0) if bias is not None else (None,) * parts
    return tuple(Projection(w, b) for w, b in zip(ws, bs))
