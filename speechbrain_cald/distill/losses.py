"""CALD distillation losses: layerwise hidden-state loss and logits KD.

Normalisation (both losses)
---------------------------
Every loss here is a **sum over valid frames divided by the number of valid
frames in the batch** (``mask.sum()``). Padded frames contribute nothing to the
numerator nor to the denominator, so the value does not change when a batch
is padded further; and it is a per-frame quantity, so it does not grow with the
batch size or the utterance length.

- ``layer_distill_loss`` (defaults = the CALD speech reference, ``model.py``):
  for each mapped layer, both hidden states go through a parameter-free layer
  norm over the feature dimension (``F.layer_norm`` without weight and bias),
  the squared error is **averaged over features**, then summed over valid
  frames, divided by the number of valid frames, and finally **averaged over
  the mapped layers**. So the paper's weights (``alpha_layer`` 15 for ASR and
  SLURP, 30 for VoxCeleb1) apply as published. Options give the other
  references: ``layer_norm=False`` (raw states, the CALD GLUE recipe),
  ``layer_reduction="sum"`` (summed over layers, the CALD GLUE recipe), and
  ``feature_reduction="sum"`` (d_model times the default; this toolkit's
  earlier normalisation).
- ``logits_distill_loss``: ``KL(p_teacher || p_student)`` with
  ``p = softmax(logits / T)`` (T = 2 by default), summed over classes, per
  valid frame (or per utterance for ``(B, C)`` logits), divided by the number
  of valid frames (utterances). It is **not** multiplied by ``T**2`` (the
  CALD reference applies no such factor; fold it into ``alpha_logits`` if you
  want Hinton's gradient scaling).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = ["LAYER_LOSS_DEFAULTS", "layer_distill_loss", "logits_distill_loss"]

# The CALD speech reference's layer term (model.py): LN on both states, MSE over features,
# sum over valid frames / valid frames, mean over layers.
LAYER_LOSS_DEFAULTS = {"layer_norm": True, "feature_reduction": "mean", "layer_reduction": "mean"}
_REDUCTIONS = ("mean", "sum")


def _valid(mask: Optional[torch.Tensor], shape: torch.Size, device) -> torch.Tensor:
    """Bool ``(B, T)``: True on valid frames."""
    if mask is None:
        return torch.ones(shape[0], shape[1], dtype=torch.bool, device=device)
    if tuple(mask.shape) != (shape[0], shape[1]):
        raise ValueError(
            f"mask should be (B, T) = {(shape[0], shape[1])} like the states, found {tuple(mask.shape)}"
        )
    return mask.to(device=device, dtype=torch.bool)


def _masked_mean(per_frame: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sum over valid frames / number of valid frames; padding (even NaN) is ignored."""
    return per_frame.masked_fill(~valid, 0.0).sum() / valid.sum().clamp_min(1)


def layer_distill_loss(
    student_states: Sequence[torch.Tensor],
    teacher_states: Sequence[torch.Tensor],
    mask: Optional[torch.Tensor] = None,
    layer_map: Optional[Sequence[int]] = None,
    layer_norm: bool = True,
    feature_reduction: str = "mean",
    layer_reduction: str = "mean",
) -> torch.Tensor:
    """Layerwise hidden-state distillation loss (CALD).

    Arguments
    ---------
    student_states : sequence of torch.Tensor
        One ``(B, T, D)`` state per student step.
    teacher_states : sequence of torch.Tensor
        One ``(B, T, D)`` state per teacher layer (no gradient needed).
    mask : torch.Tensor, optional
        ``(B, T)`` bool, True on valid frames; None means all valid.
    layer_map : sequence of int, optional
        Student step ``i`` is compared with teacher layer ``layer_map[i]``;
        default: the identity (same number of steps and layers).
    layer_norm : bool
        Parameter-free layer norm on both states first (CALD speech and LM
        references); False compares the raw states (CALD GLUE reference).
    feature_reduction : {"mean", "sum"}
        Squared error averaged (the references) or summed over the D features.
    layer_reduction : {"mean", "sum"}
        Per-layer terms averaged (speech, LM) or summed (GLUE reference).

    Returns
    -------
    torch.Tensor
        Scalar: by default the mean over mapped layers of
        ``sum_{valid frames} mean_D (LN(s) - LN(t))**2 / n_valid_frames``.

    Example
    -------
    >>> s = [torch.randn(2, 5, 8) for _ in range(2)]
    >>> mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    >>> float(layer_distill_loss(s, s, mask))
    0.0
    >>> t = [x + 1.0 for x in s]  # a shift is removed by the layer norm
    >>> float(layer_distill_loss(s, t, mask)) < 1e-8
    True
    >>> u = [torch.randn(2, 5, 8) for _ in range(2)]
    >>> mean = layer_distill_loss(s, u, mask)
    >>> tol = 64 * torch.finfo(mean.dtype).eps * 8 * mean  # sums of positive terms in another order
    >>> bool(abs(layer_distill_loss(s, u, mask, feature_reduction="sum") - 8 * mean) <= tol)
    True
    >>> bool(abs(layer_distill_loss(s, u, mask, layer_reduction="sum") - 2 * mean) <= tol)
    True
    """
    for name, value in (("feature_reduction", feature_reduction), ("layer_reduction", layer_reduction)):
        if value not in _REDUCTIONS:
            raise ValueError(f"layer_distill_loss: {name} should be one of {_REDUCTIONS}, found {value!r}")
    if layer_map is None:
        layer_map = list(range(len(student_states)))
    if len(layer_map) != len(student_states):
        raise ValueError(
            f"layer_map has {len(layer_map)} entries but the student gave "
            f"{len(student_states)} states (one entry per student step expected)"
        )
    if len(student_states) == 0:
        raise ValueError("layer_distill_loss: no student states (did the taps see a forward pass?)")
    first = student_states[0]
    valid = _valid(mask, first.shape, first.device)
    total = first.new_zeros((), dtype=torch.float32)
    for i, t_index in enumerate(layer_map):
        if not 0 <= t_index < len(teacher_states):
            raise IndexError(
                f"layer_map[{i}] = {t_index} but the teacher gave {len(teacher_states)} states"
            )
        s, t = student_states[i], teacher_states[t_index]
        if s.shape != t.shape:
            raise ValueError(
                f"student state {i} {tuple(s.shape)} and teacher state {t_index} "
                f"{tuple(t.shape)} differ in shape"
            )
        # fp32 for the norm and the reduction: bf16 sums over many frames drift.
        s, t = s.float(), t.detach().float()
        if layer_norm:
            s, t = F.layer_norm(s, s.shape[-1:]), F.layer_norm(t, t.shape[-1:])
        squared = (s - t).pow(2)
        per_frame = squared.mean(-1) if feature_reduction == "mean" else squared.sum(-1)  # (B, T)
        total = total + _masked_mean(per_frame, valid)
    return total / len(layer_map) if layer_reduction == "mean" else total


def logits_distill_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    temperature: float = 2.0,
) -> torch.Tensor:
    """KL(teacher || student) of ``softmax(logits / T)``, per valid frame.

    Arguments
    ---------
    student_logits : torch.Tensor
        ``(B, T, V)`` frame logits (CTC, LM) or ``(B, C)`` utterance logits.
    teacher_logits : torch.Tensor
        Same shape as ``student_logits``.
    mask : torch.Tensor, optional
        ``(B, T)`` bool, True on valid frames (ignored for ``(B, C)`` logits).
    temperature : float
        ``T`` (2 in CALD). The result is not multiplied by ``T**2``.

    Returns
    -------
    torch.Tensor
        Scalar: ``sum_{valid frames} KL / n_valid_frames``.

    Example
    -------
    >>> z = torch.randn(2, 4, 6)
    >>> float(logits_distill_loss(z, z))
    0.0
    >>> float(logits_distill_loss(z, z.flip(-1))) > 0
    True
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    if temperature <= 0:
        raise ValueError(f"temperature should be > 0, found {temperature}")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # (B, T) or (B,)
    if kl.dim() == 1:
        return kl.mean()
    return _masked_mean(kl, _valid(mask, kl.shape, kl.device))
