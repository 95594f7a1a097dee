"""A learning rate of their own for the parameters a conversion created.

CALD fine-tunes a converted student with one learning rate. In a short run
(a CPU recipe's ~100 steps) the new token mixers barely move at a fine-tuning
rate: Linformer's projections are initialised N(0, 1), and Adam changes each
entry by about ``lr`` per step. ``new_params_lr`` gives the parameters listed by
``convert.new_parameters`` their own peak rate; every scheduler still sets the
shape of the schedule. The groups are ``[kept, new]``, the kept group first, so
``param_groups[0]["lr"]`` stays the student's rate that schedulers, logs and the
trajectory guide read; the new group carries ``lr_scale`` (its rate over the
kept group's), re-applied before every optimizer step by :func:`sync_group_lrs`
because SpeechBrain's schedulers write one rate into every group.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from speechbrain_cald.convert.new_params import new_parameters

__all__ = ["build_optimizer", "sync_group_lrs"]


def build_optimizer(
    opt_class: Callable,
    params: Sequence[nn.Parameter],
    model: nn.Module,
    new_params_lr: Optional[float] = None,
) -> torch.optim.Optimizer:
    """``opt_class(params)``, or two groups when ``new_params_lr`` is set.

    Arguments
    ---------
    opt_class : callable
        The YAML's optimizer (``!name:torch.optim.AdamW``, its ``lr`` set); it
        must accept parameter groups (every torch optimizer does).
    params : sequence of nn.Parameter
        Everything the optimizer trains.
    model : nn.Module
        The student whose ``new_parameters`` get ``new_params_lr``.
    new_params_lr : float, optional
        Peak rate of the new parameters; None: one group, one rate.

    Example
    -------
    >>> from transformers import BertConfig, BertModel
    >>> from speechbrain_cald.convert import to_linear_time
    >>> student = to_linear_time(BertModel(BertConfig(hidden_size=16, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=32, vocab_size=30, max_position_embeddings=8)),
    ...     "linformer", k=4)
    >>> opt = build_optimizer(lambda p: torch.optim.AdamW(p, lr=1e-4), list(student.parameters()), student, 0.05)
    >>> [(len(g["params"]), g["lr"]) for g in opt.param_groups]
    [(23, 0.0001), (2, 0.05)]
    >>> for g in opt.param_groups: g["lr"] = 5e-5     # what a SpeechBrain scheduler does
    >>> sync_group_lrs(opt); [g["lr"] for g in opt.param_groups]
    [5e-05, 0.025]
    """
    if new_params_lr is None:
        return opt_class(params)
    new_ids = {id(p) for _, p in new_parameters(model)}
    if not new_ids:
        raise ValueError(
            f"hparams `new_params_lr: {new_params_lr}`: {type(model).__name__} has no parameters that a "
            "conversion created (it is not a to_linear_time student); remove the key or set it to null"
        )
    groups: List[Dict] = [
        {"params": [p for p in params if id(p) not in new_ids]},
        {"params": [p for p in params if id(p) in new_ids]},
    ]
    optimizer = opt_class(groups)
    base = optimizer.param_groups[0]["lr"]
    if not base > 0:
        raise ValueError(f"new_params_lr: the optimizer's lr must be > 0 to scale from, found {base}")
    optimizer.param_groups[1]["lr_scale"] = float(new_params_lr) / base
    optimizer.param_groups[1]["lr"] = float(new_params_lr)
    return optimizer


def sync_group_lrs(optimizer: torch.optim.Optimizer) -> None:
    """Set each group with an ``lr_scale`` to the first group's rate times that scale."""
    base = optimizer.param_groups[0]["lr"]
    for group in optimizer.param_groups[1:]:
        if "lr_scale" in group:
            group["lr"] = base * group["lr_scale"]
