"""Utterance / sentence classification objective (cross-entropy) and accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["classification_objective", "correct_predictions"]


def classification_objective(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy of utterance logits.

    Arguments
    ---------
    logits : torch.Tensor
        ``(B, C)`` class logits.
    labels : torch.Tensor
        ``(B,)`` class ids (a trailing singleton dim ``(B, 1)``, as
        SpeechBrain's label encoders give, is accepted).
    label_smoothing : float
        As in ``torch.nn.functional.cross_entropy``.

    Returns
    -------
    torch.Tensor
        Scalar.

    Example
    -------
    >>> logits = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    >>> float(classification_objective(logits, torch.tensor([0, 1]))) < 0.02
    True
    """
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"classification: logits should be (B, C) and labels (B,), found "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    return F.cross_entropy(logits.float(), labels.long(), label_smoothing=label_smoothing)


def correct_predictions(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """Number of utterances whose arg-max class is the label.

    Example
    -------
    >>> correct_predictions(torch.tensor([[2.0, 1.0], [2.0, 1.0]]), torch.tensor([0, 1]))
    1
    """
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    return int((logits.argmax(-1) == labels).sum())
