"""Causal language modelling: the next-token objective and the Brain hooks of LM recipes.

- :func:`next_token_objective`: mean cross-entropy of predicting token t + 1.
- :class:`CausalLMBrain`: ``DistillBrain`` hooks for a transformers causal LM
  (teacher or converted student) on blocks of token ids
  (:class:`speechbrain_cald.data.token_blocks.TokenBlocks`); validation
  perplexity over tokens.
- :func:`mark_no_weight_decay` / :func:`adamw_grouped`: weight decay on some
  parameters only (the CALD LM reference decays the new mixers only).
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Dict, Iterable, Optional, Sequence

import speechbrain as sb
import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_cald.distill.brain import DistillBrain, ModelOutput
from speechbrain_cald.distill.schedules import WarmupCosineLR
from speechbrain_cald.distill.taps import lengths_to_mask

__all__ = ["CausalLMBrain", "adamw_grouped", "mark_no_weight_decay", "next_token_objective", "perplexity"]


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


class CausalLMBrain(DistillBrain):
    """``DistillBrain`` hooks for causal LMs trained on fixed-length token blocks.

    Batches are ``TokenBlocks`` items collated by torch's default collate
    (``{"id": [...], "tokens": (B, T)}``, all blocks of one length). Each network is called as
    ``model(input_ids=tokens, use_cache=False).logits`` (a transformers causal
    LM: the GPT-NeoX teacher or its converted student); the task loss is
    :func:`next_token_objective`. Validation and test report ``ppl``, the
    perplexity over every predicted token (token-weighted, summed across DDP
    processes). A :class:`~speechbrain_cald.distill.schedules.WarmupCosineLR`
    with an open horizon gets the planned number of steps when training starts.
    """

    def prepare_batch(self, batch, stage):
        # torch's default collate of TokenBlocks items: {"id": [...], "tokens": (B, T)}
        return SimpleNamespace(tokens=batch["tokens"].to(self.device), id=batch["id"])

    def run_model(self, model, batch, stage):
        return ModelOutput(model(input_ids=batch.tokens, use_cache=False).logits)

    def task_loss(self, output, batch, stage):
        loss = next_token_objective(output.logits, batch.tokens)
        self._last_nll = (float(loss.detach()), batch.tokens.numel() - batch.tokens.shape[0])
        return loss

    def reset_metrics(self, stage):
        self.nll_sum, self.nll_tokens = 0.0, 0

    def update_metrics(self, output, batch, stage):
        mean, count = self._last_nll
        self.nll_sum += mean * count
        self.nll_tokens += count

    def stage_metrics(self, stage):
        totals = torch.tensor([self.nll_sum, float(self.nll_tokens)], dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            totals = totals.to(self.device)
            torch.distributed.all_reduce(totals)
        nll = float(totals[0] / totals[1].clamp_min(1))
        return {"nll": nll, "ppl": perplexity(nll)}

    def on_fit_start(self):
        super().on_fit_start()
        schedule = self.cfg.lr_scheduler
        if isinstance(schedule, WarmupCosineLR) and self.opt_class is not None:
            schedule.plan(self.planned_steps)
            schedule.apply(self.optimizer)  # the first step's rate (warm-up starts low)


def mark_no_weight_decay(model: nn.Module, decay_only: Sequence[str] = (".mixer.",)) -> nn.Module:
    """Flag ``_no_weight_decay`` on every parameter outside ``decay_only``, and on biases and norms.

    The CALD LM reference (``--weight_decay_mamba_only``) applies weight decay
    to the new mixers' weights only: every other (pretrained) parameter, every
    bias and every norm weight trains without decay. Parameters the mixer
    already flags (Mamba's ``A_log`` and ``D``, as in mamba_ssm) stay undecayed.

    Arguments
    ---------
    model : nn.Module
        The student.
    decay_only : sequence of str
        Substrings of the parameter names that keep weight decay.

    Returns
    -------
    nn.Module
        ``model`` (flagged in place), so a YAML can ``!apply`` it.

    Example
    -------
    >>> net = nn.ModuleDict({"mixer": nn.Linear(2, 2), "mlp": nn.Linear(2, 2)})
    >>> _ = mark_no_weight_decay(net, decay_only=("mixer.",))
    >>> sorted(n for n, p in net.named_parameters() if not getattr(p, "_no_weight_decay", False))
    ['mixer.weight']
    """
    for name, param in model.named_parameters():
        plain = name.endswith("bias") or "norm" in name.rsplit(".", 2)[-2:][0]
        if plain or not any(key in name for key in decay_only):
            param._no_weight_decay = True
    return model


def adamw_grouped(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0, **kwargs) -> torch.optim.AdamW:
    """AdamW with ``weight_decay`` on parameters not flagged ``_no_weight_decay``, 0 on the others.

    Example
    -------
    >>> a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    >>> b._no_weight_decay = True
    >>> [g["weight_decay"] for g in adamw_grouped([a, b], lr=0.1, weight_decay=0.5).param_groups]
    [0.5, 0.0]
    """
    params = list(params)
    groups = [
        {"params": [p for p in params if not getattr(p, "_no_weight_decay", False)], "weight_decay": weight_decay},
        {"params": [p for p in params if getattr(p, "_no_weight_decay", False)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, **kwargs)
