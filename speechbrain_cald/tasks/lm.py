"""Causal language modelling objective: next-token cross-entropy over valid tokens."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from speechbrain_cald.distill.taps import lengths_to_mask

__all__ = ["next_token_objective", "perplexity"]


def next_token_objective(
    logits: torch.Tensor, tokens: torch.Tensor, lengths: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Mean cross-entropy of predicting token ``t + 1`` from position ``t``.

    Arguments
    ---------
    logits : torch.Tensor
        ``(B, T, V)`` logits at every input position.
    tokens : torch.Tensor
        ``(B, T)`` the input token ids.
    lengths : torch.Tensor, optional
        ``(B,)`` absolute valid tokens (None: all ``T``).

    Returns
    -------
    torch.Tensor
        Scalar: summed over the predicted valid tokens (positions 1 ..
        length - 1 of each sequence), divided by their number; padding does
        not change it.

    Example
    -------
    >>> tokens = torch.tensor([[1, 2, 3, 0]])
    >>> logits = torch.full((1, 4, 4), -20.0)
    >>> for t, k in enumerate([2, 3, 1, 1]): logits[0, t, k] = 20.0
    >>> float(next_token_objective(logits, tokens, torch.tensor([3]))) < 1e-6
    True
    """
    batch, frames = tokens.shape
    if logits.shape[:2] != tokens.shape:
        raise ValueError(
            f"next-token: logits (B, T, V) and tokens (B, T) disagree: "
            f"{tuple(logits.shape)} vs {tuple(tokens.shape)}"
        )
    valid = lengths_to_mask(lengths, frames, batch).to(tokens.device)[:, 1:]
    per_token = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), tokens[:, 1:].long(), reduction="none"
    )  # (B, T - 1)
    return per_token.masked_fill(~valid, 0.0).sum() / valid.sum().clamp_min(1)


def perplexity(mean_nll: float) -> float:
    """``exp`` of a mean next-token loss.

    Example
    -------
    >>> perplexity(0.0)
    1.0
    """
    return math.exp(mean_nll)
