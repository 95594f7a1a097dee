"""Longer inputs for BERT / RoBERTa students: the learned position table, tiled.

A linear-time student (BiMamba2) can read sequences longer than its
teacher's learned absolute positions (512 tokens), but the embedding table
stops there. ``extend_positions(model, max_tokens)`` grows the table by
copying the learned rows again after the last one (Longformer's
initialisation, Beltagy et al. 2020, section 5), so that position 512 + i
gets the embedding of position i; the BiMamba2 mixers carry the order
themselves. Linformer students cannot use it: their key/value projections
are sized to the positions they were trained with.

RoBERTa numbers positions from ``padding_idx + 1``; the rows up to the
padding index are kept as they are and only the real positions are tiled.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["extend_positions", "max_tokens"]


def _embeddings(model: nn.Module) -> nn.Module:
    base = getattr(model, "base_model", model)
    emb = getattr(base, "embeddings", None)
    if emb is None or not isinstance(getattr(emb, "position_embeddings", None), nn.Embedding):
        raise TypeError(
            f"extend_positions: {type(model).__name__} has no BERT/RoBERTa-style "
            "embeddings.position_embeddings table"
        )
    return emb


def _offset(table: nn.Embedding) -> int:
    # RoBERTa: rows 0..padding_idx are not positions
    return 0 if table.padding_idx is None else table.padding_idx + 1


def max_tokens(model: nn.Module) -> int:
    """Tokens per sequence the position table allows (special tokens included).

    Example
    -------
    >>> from transformers import RobertaConfig, RobertaModel
    >>> cfg = RobertaConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
    ...                     vocab_size=20, max_position_embeddings=18)
    >>> max_tokens(RobertaModel(cfg))
    16
    """
    table = _embeddings(model).position_embeddings
    return table.num_embeddings - _offset(table)


def extend_positions(model: nn.Module, tokens: int) -> nn.Module:
    """Grow ``model``'s position table (in place) to ``tokens`` positions by tiling.

    Arguments
    ---------
    model : nn.Module
        A transformers BERT / RoBERTa model (any head), typically a converted student.
    tokens : int
        Positions wanted; nothing changes when the table already has as many.

    Returns
    -------
    nn.Module
        ``model``; ``config.max_position_embeddings`` follows the table.

    Example
    -------
    >>> from transformers import BertConfig, BertModel
    >>> cfg = BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
    ...                  vocab_size=20, max_position_embeddings=4)
    >>> m = extend_positions(BertModel(cfg), 10)
    >>> w = m.embeddings.position_embeddings.weight
    >>> w.shape[0], bool((w[4:8] == w[0:4]).all()), bool((w[8:10] == w[0:2]).all())
    (10, True, True)
    >>> m(input_ids=torch.ones(1, 10, dtype=torch.long)).last_hidden_state.shape
    torch.Size([1, 10, 8])
    """
    emb = _embeddings(model)
    old = emb.position_embeddings
    offset = _offset(old)
    learned = old.num_embeddings - offset
    if tokens <= learned:
        return model
    rows = offset + tokens
    weight = old.weight.detach()
    repeats = -(-tokens // learned)
    tiled = weight[offset:].repeat(repeats, 1)[:tokens]
    new = nn.Embedding(rows, weight.shape[1], padding_idx=old.padding_idx).to(weight.device, weight.dtype)
    with torch.no_grad():
        new.weight.copy_(torch.cat([weight[:offset], tiled]))
    emb.position_embeddings = new
    device = emb.position_ids.device
    emb.position_ids = torch.arange(rows, device=device).expand((1, -1))
    if hasattr(emb, "token_type_ids"):
        emb.token_type_ids = torch.zeros((1, rows), dtype=torch.long, device=device)
    config = getattr(model, "config", None)
    if config is not None:
        config.max_position_embeddings = rows
    return model
