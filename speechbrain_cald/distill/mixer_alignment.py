"""Mixer alignment: each new mixer learns its attention's output from the teacher's own inputs.

A warm-up before CALD's end-to-end training, for guides with a teacher. The
teacher runs on a batch; forward hooks record what each self-attention received
and returned; the student's mixer in the same slot is called with the very same
inputs, and its output is pulled towards the attention's (squared error over
the attention output's mean square, summed over layers). Every layer learns at
once and independently, from exact inputs, with no backward pass through the
rest of the network: the "hidden-state alignment" stage of MOHAWK (Bick et al.,
2024, "Transformers to SSMs: Distilling Quadratic Knowledge to Subquadratic
Models"), here per layer of a converted model. Only the conversion's new
parameters (``convert.new_parameters``) move. Not in the CALD paper: a recipe
turns it on in its YAML (``mixer_alignment``), and docs/fidelity.md says so.

Without a padding mask (Whisper's 30-second windows) each recorded call can be
cut into random crops of ``crop_frames`` frames: a mixer step then costs a
fraction of a window, and several steps reuse one teacher pass.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable, List, Optional, Tuple

import torch
from torch import nn

from speechbrain_cald.convert import new_parameters
from speechbrain_cald.distill.attention_transfer import AttentionTransfer, relative_mse

__all__ = ["MixerAlignment", "align_mixers", "align_from_hparams"]

logger = logging.getLogger(__name__)


@dataclass
class MixerAlignment:
    """How long and how fast the mixers are aligned (all off with ``steps: 0``).

    Arguments
    ---------
    steps : int
        Optimizer steps (0: no alignment).
    lr : float
        AdamW's rate for the new parameters (cosine to 10% of it over ``steps``).
    inner_steps : int
        Steps per teacher pass (each on fresh crops of the same recorded calls).
    crop_frames : int, optional
        Random crops of this many frames when the attention had no mask; None:
        whole sequences.
    crops_per_call : int
        Crops drawn from each recorded sequence per step.
    max_grad_norm : float
        Gradient clipping.
    """

    steps: int = 0
    lr: float = 1e-3
    inner_steps: int = 4
    crop_frames: Optional[int] = None
    crops_per_call: int = 2
    max_grad_norm: float = 1.0


def _hidden(args: tuple, kwargs: dict) -> Tuple[torch.Tensor, bool]:
    """The recorded hidden states and whether the call had a mask (then no cropping)."""
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    masked = any(torch.is_tensor(v) for k, v in kwargs.items() if "mask" in k) or len(args) > 1
    return hidden, masked


def align_mixers(student: nn.Module, teacher: nn.Module, batches: Iterable[Any],
                 run: Callable[[nn.Module, Any], Any], config: MixerAlignment,
                 generator: Optional[torch.Generator] = None,
                 valid: Optional[Callable[[Any], torch.Tensor]] = None) -> List[float]:
    """Align every new mixer of ``student`` to its attention in ``teacher`` (see the module's text).

    Arguments
    ---------
    student : nn.Module
        A converted model (``to_linear_time``); its wrappers sit where the teacher's attentions are.
    teacher : nn.Module
        The transformer it was converted from (run in eval mode, without gradients).
    batches : iterable
        Training batches (a loader or a list: iterated again as long as needed).
    run : callable
        ``run(model, batch)``: one forward pass of the teacher on a batch.
    config : MixerAlignment
        Steps, rate, crops.
    generator : torch.Generator, optional
        For the crops (reproducible runs).
    valid : callable, optional
        ``valid(batch)``: ``(B, T)`` bool, True on the real tokens / frames of
        the batch (padded texts): the loss counts those only. None: every
        position counts (unpadded windows).

    Returns
    -------
    list of float
        The loss of every step (the mean over layers of squared error / mean square).

    Example
    -------
    >>> from transformers import WhisperConfig, WhisperForConditionalGeneration
    >>> from speechbrain_cald.convert import to_linear_time
    >>> _ = torch.manual_seed(0)
    >>> cfg = WhisperConfig(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
    ...     decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8,
    ...     max_source_positions=20, vocab_size=60, max_target_positions=8, pad_token_id=0, bos_token_id=1,
    ...     eos_token_id=1, decoder_start_token_id=2)
    >>> teacher = WhisperForConditionalGeneration(cfg).eval()
    >>> student = to_linear_time(teacher, "bimamba2", d_state=8, headdim=8, chunk_size=8)
    >>> feats = [torch.randn(2, 8, 40) for _ in range(2)]
    >>> losses = align_mixers(student, teacher, feats, lambda m, x: m.model.encoder(x),
    ...                       MixerAlignment(steps=40, lr=1e-2, inner_steps=2, crop_frames=12))
    >>> len(losses), losses[-1] < losses[0]
    (40, True)
    """
    if config.steps <= 0:
        return []
    params = [p for _, p in new_parameters(student)]
    if not params:
        raise ValueError("align_mixers: the student has no new parameters (not a converted model?)")
    frozen = [(p, p.requires_grad) for p in student.parameters()]
    for p in student.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / config.steps)))
    transfer = AttentionTransfer(student, teacher)  # the hooks on the teacher's attentions, the slots' mixers
    was_training = teacher.training, student.training
    teacher.eval()
    student.train()
    losses: List[float] = []
    start = time.time()
    try:
        while len(losses) < config.steps:
            before = len(losses)
            for batch in batches:
                with torch.no_grad(), transfer.recording():
                    run(teacher, batch)
                calls = transfer.take()
                mask = None if valid is None else valid(batch)
                for _ in range(config.inner_steps):
                    loss = _step(transfer.mixers, calls, config, generator, mask)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                    opt.step()
                    sched.step()
                    losses.append(float(loss.detach()))
                    if len(losses) % 20 == 0 or len(losses) == config.steps:
                        logger.info("mixer alignment: step %d/%d, loss %.4f (%.0f s)", len(losses), config.steps,
                                    losses[-1], time.time() - start)
                    if len(losses) >= config.steps:
                        break
                if len(losses) >= config.steps:
                    break
            if len(losses) == before:
                raise ValueError("align_mixers: `batches` gave no batch (an exhausted iterator? pass a loader or a list)")
    finally:
        transfer.remove()
        for p, flag in frozen:
            p.requires_grad_(flag)
        teacher.train(was_training[0])
        student.train(was_training[1])
    return losses


def align_from_hparams(hparams: dict, modules: dict, batches: Iterable[Any], run: Callable[[nn.Module, Any], Any],
                       valid: Optional[Callable[[Any], torch.Tensor]] = None) -> List[float]:
    """A recipe's alignment, as its YAML's ``mixer_alignment`` says, before CALD's first step.

    Skipped (returns ``[]``) when the YAML asks for none (no key or ``steps: 0``),
    when the guide has no teacher (``modules`` without ``teacher``: unguided), and
    when the run resumes (``hparams["checkpointer"]`` holds a checkpoint: it
    restores the aligned, further trained weights). The crops draw from a
    generator seeded with ``hparams["seed"]``.

    Arguments
    ---------
    hparams : dict
        The loaded YAML.
    modules : dict
        ``model`` (the converted student) and, with a teacher, ``teacher``.
    batches, run, valid
        As ``align_mixers``.

    Returns
    -------
    list of float
        The loss of every alignment step (empty when skipped).

    Example
    -------
    >>> align_from_hparams({"mixer_alignment": {"steps": 0}}, {}, [], None)
    []
    >>> align_from_hparams({"mixer_alignment": {"stpes": 10}}, {}, [], None)
    Traceback (most recent call last):
      ...
    ValueError: hparams `mixer_alignment`: unknown key(s) stpes; expected some of steps, lr, inner_steps, crop_frames, crops_per_call, max_grad_norm
    """
    options = dict(hparams.get("mixer_alignment") or {})
    known = [f.name for f in fields(MixerAlignment)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"hparams `mixer_alignment`: unknown key(s) {', '.join(unknown)}; "
                         f"expected some of {', '.join(known)}")
    config = MixerAlignment(**options)
    if config.steps <= 0 or "teacher" not in modules:
        return []
    if hparams["checkpointer"].find_checkpoint() is not None:
        logger.info("mixer alignment: skipped, the run resumes from %s", hparams["checkpointer"].checkpoints_dir)
        return []
    generator = torch.Generator().manual_seed(int(hparams.get("seed", 0)))
    return align_mixers(modules["model"], modules["teacher"], batches, run, config, generator, valid)


def _step(slots: List[nn.Module], calls, config: MixerAlignment, generator,
          mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    terms = []
    for slot, (args, kwargs, target) in zip(slots, calls):
        hidden, masked = _hidden(args, kwargs)
        if config.crop_frames and not masked and mask is None and hidden.shape[1] > config.crop_frames:
            x, y = _crops(hidden, target, config.crop_frames, config.crops_per_call, generator)
            out = slot(hidden_states=x)
        else:
            y = target
            out = slot(*args, **kwargs)
        out = out[0] if isinstance(out, (tuple, list)) else out
        if mask is not None and tuple(mask.shape) != tuple(y.shape[:2]):
            raise ValueError(f"align_mixers: `valid` gave a {tuple(mask.shape)} mask for attention outputs of "
                             f"{tuple(y.shape[:2])} (batch, positions)")
        terms.append(relative_mse(out, y, None if mask is None else mask.to(y.device)))
    return torch.stack(terms).mean()


def _crops(x: torch.Tensor, y: torch.Tensor, frames: int, per_call: int, generator) -> Tuple[torch.Tensor, torch.Tensor]:
    B, T = x.shape[:2]
    starts = torch.randint(0, T - frames + 1, (B * per_call,), generator=generator)
    rows = torch.arange(B).repeat_interleave(per_call)
    idx = starts[:, None] + torch.arange(frames)[None]
    return x[rows[:, None], idx], y[rows[:, None], idx]
