"""CTC ASR objective and greedy decoding, on top of SpeechBrain's functions.

Lengths are absolute frame / token counts ``(B,)`` as everywhere in the
package; they are turned into SpeechBrain's relative lengths here, at the edge.
"""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from speechbrain.decoders import ctc_greedy_decode
from speechbrain.nnet.losses import ctc_loss

__all__ = ["ctc_greedy_transcripts", "ctc_objective", "relative_lengths"]


def relative_lengths(lengths: Optional[torch.Tensor], max_len: int, batch: int) -> torch.Tensor:
    """Absolute lengths ``(B,)`` -> SpeechBrain's relative lengths in [0, 1].

    Example
    -------
    >>> relative_lengths(torch.tensor([2, 4]), 4, 2)
    tensor([0.5000, 1.0000])
    >>> relative_lengths(None, 4, 2)
    tensor([1., 1.])
    """
    if lengths is None:
        return torch.ones(batch)
    return lengths.float() / max_len


def ctc_objective(
    logits: torch.Tensor,
    lengths: Optional[torch.Tensor],
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
    blank_index: int = 0,
) -> torch.Tensor:
    """CTC loss (``speechbrain.nnet.losses.ctc_loss``, mean reduction).

    Arguments
    ---------
    logits : torch.Tensor
        ``(B, T, V)`` logits or log-probabilities (log-softmax is applied).
    lengths : torch.Tensor or None
        ``(B,)`` absolute valid frames (None: all ``T``).
    targets : torch.Tensor
        ``(B, L)`` token ids, padded.
    target_lengths : torch.Tensor
        ``(B,)`` absolute valid tokens.
    blank_index : int
        The CTC blank.

    Returns
    -------
    torch.Tensor
        Scalar: per-utterance CTC loss divided by its target length, averaged
        over the batch (PyTorch's ``reduction="mean"``); infinite losses
        (targets longer than the input) are zeroed.

    Example
    -------
    >>> logits = torch.randn(2, 6, 5)
    >>> targets = torch.tensor([[1, 2, 0], [3, 0, 0]])
    >>> loss = ctc_objective(logits, torch.tensor([6, 4]), targets, torch.tensor([2, 1]))
    >>> loss.shape, bool(loss > 0)
    (torch.Size([]), True)
    """
    batch, frames = logits.shape[:2]
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return ctc_loss(
        log_probs,
        targets,
        relative_lengths(lengths, frames, batch).to(logits.device),
        relative_lengths(target_lengths, targets.shape[1], batch).to(logits.device),
        blank_index,
        reduction="mean",
    )


def ctc_greedy_transcripts(
    logits: torch.Tensor, lengths: Optional[torch.Tensor], blank_index: int = 0
) -> List[List[int]]:
    """Greedy CTC decoding (``speechbrain.decoders.ctc_greedy_decode``).

    Arguments
    ---------
    logits : torch.Tensor
        ``(B, T, V)``.
    lengths : torch.Tensor or None
        ``(B,)`` absolute valid frames.
    blank_index : int
        The CTC blank.

    Returns
    -------
    list of list of int
        Token ids per utterance, repeats merged and blanks removed.

    Example
    -------
    >>> logits = torch.full((1, 5, 3), -9.0)
    >>> for t, k in enumerate([1, 1, 0, 1, 2]): logits[0, t, k] = 0.0
    >>> ctc_greedy_transcripts(logits, torch.tensor([5]))
    [[1, 1, 2]]
    >>> ctc_greedy_transcripts(logits, torch.tensor([2]))
    [[1]]
    """
    batch, frames = logits.shape[:2]
    return ctc_greedy_decode(
        logits, relative_lengths(lengths, frames, batch).to(logits.device), blank_id=blank_index
    )
