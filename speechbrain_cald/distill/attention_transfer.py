"""Attention transfer: fit each new mixer to the self-attention it replaced, on the teacher's own input.

Before CALD's end-to-end distillation, every mixer of a converted student is
trained alone to give what the replaced attention gave: the teacher runs (no
gradient) and records, at each attention slot, the hidden states and mask its
attention was called with and the attention's output; the student's module in
the same slot is called on those very inputs, and the loss is the squared
error against the attention's output over valid frames, relative to that
output's energy, averaged over layers. Each layer learns from a clean input
(no error from the layers below) and no layer waits for another, as in the
"attention transfer" stage of LoLCATs (Zhang et al., ICLR 2025) and the
attention-to-Mamba alignment of "Mamba in the Llama" (Wang et al., 2024).
Not part of CALD itself (``DistillConfig.transfer_steps``, default 0).

Why: mini/Text's BiMamba2 student starts at the majority class whatever its
initialisation (a classifier reading the [CLS] token knows nothing of the
other tokens until the mixers carry them), and with end-to-end CALD alone it
stayed there for ~60 steps; 60 transfer steps brought it to 61.8% dev accuracy
before any task loss (``recipes/mini/Text/RESULTS.md``, notes).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from speechbrain_cald.convert.families import find_family
from speechbrain_cald.distill.taps import lengths_to_mask

__all__ = ["AttentionTransfer", "relative_mse"]


def relative_mse(student: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sum (student - target)^2 / sum target^2`` over valid frames (0: exact; 1: as far as 0 is).

    Arguments
    ---------
    student, target : torch.Tensor
        ``(B, T, D)``.
    mask : torch.Tensor, optional
        ``(B, T)`` bool, True on valid frames; None: all valid.

    Returns
    -------
    torch.Tensor
        Scalar.

    Example
    -------
    >>> t = torch.ones(2, 3, 4)
    >>> float(relative_mse(torch.zeros(2, 3, 4), t)), float(relative_mse(t, t))
    (1.0, 0.0)
    >>> s = t.clone(); s[1, 2] = 100.0  # a padded frame does not count
    >>> float(relative_mse(s, t, torch.tensor([[1, 1, 1], [1, 1, 0]]).bool()))
    0.0
    """
    if student.shape != target.shape:
        raise ValueError(
            f"relative_mse: student output {tuple(student.shape)} and attention output "
            f"{tuple(target.shape)} differ in shape"
        )
    weight = 1.0 if mask is None else mask[..., None].to(target.dtype)
    error = ((student - target) ** 2 * weight).sum()
    energy = (target**2 * weight).sum().clamp_min(torch.finfo(target.dtype).tiny)
    return error / energy


class AttentionTransfer:
    """Hooks on a teacher's attention slots and the loss of the student's modules in the same slots.

    Arguments
    ---------
    student : nn.Module
        A converted student (``to_linear_time``): its attention slots hold mixers.
    teacher : nn.Module
        The transformer it was converted from, of the same family and depth.
    family : str, optional
        Force a family entry (``speechbrain_cald.convert.FAMILIES``).

    Example
    -------
    >>> from transformers import BertConfig, BertModel
    >>> from speechbrain_cald.convert import to_linear_time
    >>> teacher = BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
    ...     intermediate_size=32, vocab_size=30)).eval()
    >>> student = to_linear_time(teacher, "bimamba2", d_state=4, headdim=8, chunk_size=4)
    >>> transfer = AttentionTransfer(student, teacher)
    >>> ids, mask = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    >>> with torch.no_grad(), transfer.recording():
    ...     _ = teacher(input_ids=ids, attention_mask=mask)
    >>> loss = transfer.loss(torch.tensor([3, 2]))
    >>> loss.backward()
    >>> student.encoder.layer[0].attention.self.mixer.forward_mixer.in_proj.weight.grad is not None
    True
    >>> student.encoder.layer[0].output.dense.weight.grad is None  # only the mixers learn from it
    True
    >>> transfer.remove()
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, family: Optional[str] = None):
        fam = find_family(teacher, family)
        teacher_slots = fam.attention_slots(teacher)
        student_slots = fam.attention_slots(student)
        if len(teacher_slots) != len(student_slots):
            raise ValueError(
                f"AttentionTransfer: the teacher has {len(teacher_slots)} attention slots, the student "
                f"{len(student_slots)}: a student converted from another teacher?"
            )
        self.attentions = [getattr(parent, attr) for parent, attr in teacher_slots]
        self.mixers = [getattr(parent, attr) for parent, attr in student_slots]
        if not all(hasattr(m, "mixer") for m in self.mixers):
            raise ValueError("AttentionTransfer: the student's attention slots hold no mixer: convert it first")
        self._recording = False
        self._calls: List[Tuple[tuple, dict, torch.Tensor]] = []
        self._handles = [a.register_forward_hook(self._keep, with_kwargs=True) for a in self.attentions]

    def _keep(self, module, args, kwargs, output):
        if self._recording:
            target = output[0] if isinstance(output, (tuple, list)) else output
            self._calls.append((args, kwargs, target.detach()))

    def recording(self):
        """Context manager: the teacher's attention calls inside it are kept for ``loss``."""
        transfer = self

        class _Recording:
            def __enter__(self):
                transfer._calls = []
                transfer._recording = True

            def __exit__(self, *exc):
                transfer._recording = False

        return _Recording()

    def take(self) -> List[Tuple[tuple, dict, torch.Tensor]]:
        """The recorded calls ``[(args, kwargs, attention output)]``, one per slot, released here."""
        calls, self._calls = self._calls, []
        if len(calls) != len(self.mixers):
            raise RuntimeError(
                f"AttentionTransfer: {len(calls)} attention calls recorded for {len(self.mixers)} slots: "
                "run the teacher once inside recording() first (LayerDrop in eval mode?)"
            )
        return calls

    def loss(self, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean over layers of ``relative_mse(student slot(inputs), attention output)``.

        Arguments
        ---------
        lengths : torch.Tensor, optional
            ``(B,)`` absolute valid frames at the layers in the recorded forward
            pass; None: all frames valid.

        Returns
        -------
        torch.Tensor
            Scalar; the kept calls are released.
        """
        calls = self.take()
        terms = []
        mask = None
        for mixer, (args, kwargs, target) in zip(self.mixers, calls):
            out = mixer(*args, **kwargs)
            out = out[0] if isinstance(out, (tuple, list)) else out
            if lengths is not None and mask is None:
                mask = lengths_to_mask(lengths, target.shape[1], target.shape[0]).to(target.device)
            terms.append(relative_mse(out.float(), target.float(), mask))
        return torch.stack(terms).mean()

    def remove(self) -> None:
        """Remove the hooks from the teacher."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
