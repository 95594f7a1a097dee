"""MiniALBERT's distillation terms: hidden-state cosine and attention-map KL.

Same conventions as ``distill/losses.py``: ``mask (B, T)`` is True on valid
frames; every loss is a **sum over valid frames (rows) divided by their
number**, so extra padding changes nothing; student step ``i`` is compared with
teacher layer ``layer_map[i]`` (for a recursive student
``student.cald_sharing["layer_map"]``); per-layer terms are averaged
(``layer_reduction="mean"``) or summed (``"sum"``, MiniALBERT's
``general_distillation.py``).

- ``hidden_cosine_loss``: ``1 - cos(s, t)`` over the feature dimension, per
  valid frame (MiniALBERT: ``CosineEmbeddingLoss(reduction="mean")`` over the
  unpadded tokens, target 1).
- ``attention_kl_loss``: ``KL(A_teacher || A_student)`` of attention rows
  ``(B, H, T, T)`` (probabilities over keys), per valid query row and head;
  keys past a sequence's length are ignored on both sides (renormalised), so
  attention maps computed with padding masks or on unpadded inputs give the
  same value. ``key_reduction="sum"`` gives the KL of each row;
  ``"mean"`` divides it by the row's number of valid keys, as MiniALBERT's
  ``KLDivLoss(reduction="mean")`` does (it averages over every element of the
  selected rows; the same on unpadded batches). Heads are averaged (rows of
  every head are the reference's rows).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from speechbrain_cald.distill.losses import _REDUCTIONS, _masked_mean, _valid

__all__ = ["hidden_cosine_loss", "attention_kl_loss"]


def _check_map(layer_map: Optional[Sequence[int]], n_student: int, n_teacher: int, what: str):
    if n_student == 0:
        raise ValueError(f"{what}: no student tensors given")
    layer_map = list(range(n_student)) if layer_map is None else list(layer_map)
    if len(layer_map) != n_student:
        raise ValueError(
            f"{what}: layer_map has {len(layer_map)} entries but the student gave {n_student} "
            "tensors (one entry per student step expected)"
        )
    for i, t in enumerate(layer_map):
        if not 0 <= t < n_teacher:
            raise IndexError(f"{what}: layer_map[{i}] = {t} but the teacher gave {n_teacher} tensors")
    return layer_map


def hidden_cosine_loss(
    student_states: Sequence[torch.Tensor],
    teacher_states: Sequence[torch.Tensor],
    mask: Optional[torch.Tensor] = None,
    layer_map: Optional[Sequence[int]] = None,
    layer_reduction: str = "mean",
) -> torch.Tensor:
    """Hidden-state cosine loss ``1 - cos`` (MiniALBERT), masked.

    Arguments
    ---------
    student_states : sequence of torch.Tensor
        One ``(B, T, D)`` state per student step.
    teacher_states : sequence of torch.Tensor
        One ``(B, T, D)`` state per teacher layer.
    mask : torch.Tensor, optional
        ``(B, T)`` bool, True on valid frames.
    layer_map : sequence of int, optional
        Teacher layer of each student step (default identity).
    layer_reduction : {"mean", "sum"}
        Per-layer terms averaged, or summed (MiniALBERT).

    Returns
    -------
    torch.Tensor
        Scalar: mean (or sum) over mapped layers of
        ``sum_{valid} (1 - cos(s, t)) / n_valid`` (each in ``[0, 2]``).

    Example
    -------
    >>> s = [torch.randn(2, 5, 8)]
    >>> float(hidden_cosine_loss(s, [2.0 * s[0]])) < 1e-6  # scale does not matter
    True
    >>> round(float(hidden_cosine_loss(s, [-s[0]])), 4)
    2.0
    """
    layer_map = _check_map(layer_map, len(student_states), len(teacher_states), "hidden_cosine_loss")
    B, T = student_states[0].shape[:2]
    valid = _valid(mask, (B, T), student_states[0].device)
    total = student_states[0].new_zeros((), dtype=torch.float32)
    for i, t_index in enumerate(layer_map):
        s, t = student_states[i].float(), teacher_states[t_index].detach().float()
        if s.shape != t.shape:
            raise ValueError(
                f"student state {i} {tuple(s.shape)} and teacher state {t_index} "
                f"{tuple(t.shape)} differ in shape"
            )
        per_frame = 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)  # (B, T)
        total = total + _masked_mean(per_frame, valid)
    return _reduce_layers(total, len(layer_map), layer_reduction)


def attention_kl_loss(
    student_attentions: Sequence[torch.Tensor],
    teacher_attentions: Sequence[torch.Tensor],
    mask: Optional[torch.Tensor] = None,
    layer_map: Optional[Sequence[int]] = None,
    eps: float = 1e-12,
    key_reduction: str = "sum",
    layer_reduction: str = "mean",
) -> torch.Tensor:
    """Attention-map KL(teacher || student) on valid rows (MiniALBERT), for attention students.

    Arguments
    ---------
    student_attentions : sequence of torch.Tensor
        One ``(B, H, T, T)`` map per student step: rows are probabilities over
        keys (as returned by HF ``output_attentions=True`` or SpeechBrain's
        attention weights).
    teacher_attentions : sequence of torch.Tensor
        Same, per teacher layer.
    mask : torch.Tensor, optional
        ``(B, T)`` bool, True on valid frames: selects the query rows counted
        and the keys kept (padded keys are dropped and rows renormalised).
    layer_map : sequence of int, optional
        Teacher layer of each student step (default identity).
    eps : float
        Floor inside the logarithms.
    key_reduction : {"sum", "mean"}
        KL of each row, or divided by the row's valid keys (MiniALBERT's code).
    layer_reduction : {"mean", "sum"}
        Per-layer terms averaged, or summed (MiniALBERT).

    Returns
    -------
    torch.Tensor
        Scalar: mean (or sum) over mapped layers of
        ``sum_{valid rows} mean_H sum_keys t (log t - log s) / n_valid_rows``
        (with ``key_reduction="mean"``, each row's KL over its valid keys).

    Example
    -------
    >>> a = torch.softmax(torch.randn(2, 2, 4, 4), -1)
    >>> float(attention_kl_loss([a], [a]))
    0.0
    >>> b = torch.softmax(torch.randn(2, 2, 4, 4), -1)
    >>> float(attention_kl_loss([a], [b])) > 0
    True
    """
    layer_map = _check_map(layer_map, len(student_attentions), len(teacher_attentions), "attention_kl_loss")
    if key_reduction not in _REDUCTIONS:
        raise ValueError(f"attention_kl_loss: key_reduction should be one of {_REDUCTIONS}, found {key_reduction!r}")
    first = student_attentions[0]
    if first.dim() != 4 or first.shape[-1] != first.shape[-2]:
        raise ValueError(f"attention maps should be (B, H, T, T), found {tuple(first.shape)}")
    B, _, T, _ = first.shape
    valid = _valid(mask, (B, T), first.device)
    keys = valid[:, None, None, :].float()  # (B, 1, 1, T)
    total = first.new_zeros((), dtype=torch.float32)
    for i, t_index in enumerate(layer_map):
        s, t = student_attentions[i].float(), teacher_attentions[t_index].detach().float()
        if s.shape != t.shape:
            raise ValueError(
                f"student attention {i} {tuple(s.shape)} and teacher attention {t_index} "
                f"{tuple(t.shape)} differ in shape"
            )
        s = s * keys
        t = t * keys
        s = s / s.sum(-1, keepdim=True).clamp_min(eps)
        t = t / t.sum(-1, keepdim=True).clamp_min(eps)
        kl = (t * (t.clamp_min(eps).log() - s.clamp_min(eps).log())).sum(-1)  # (B, H, T)
        per_row = kl.mean(1)  # (B, T)
        if key_reduction == "mean":
            per_row = per_row / keys.sum(-1).clamp_min(1).view(B, 1)
        total = total + _masked_mean(per_row, valid)
    return _reduce_layers(total, len(layer_map), layer_reduction)


def _reduce_layers(total: torch.Tensor, n_layers: int, layer_reduction: str) -> torch.Tensor:
    if layer_reduction not in _REDUCTIONS:
        raise ValueError(f"layer_reduction should be one of {_REDUCTIONS}, found {layer_reduction!r}")
    return total / n_layers if layer_reduction == "mean" else total
