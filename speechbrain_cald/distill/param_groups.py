"""Parameter groups: a learning rate of their own for the parameters a conversion
created, and no weight decay on biases and norm weights.

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

``no_decay`` splits each of these groups once more: biases and the weights of
norm modules train without weight decay (``weight_decay: 0`` in their group),
as in the CALD references (:func:`excluded_from_weight_decay`).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Set

import torch
from torch import nn

from speechbrain_cald.convert.new_params import new_parameters

__all__ = ["build_optimizer", "excluded_from_weight_decay", "sync_group_lrs"]


def excluded_from_weight_decay(name: str, norm_modules: Sequence[str]) -> bool:
    """Whether parameter ``name`` trains without weight decay: a bias, or a weight of a module named in ``norm_modules``.

    The CALD speech reference decays every parameter but ``n.split('.')[-1] ==
    'bias'`` and ``n.split('.')[-2] == 'layer_norm'`` (``speech/models/model.py``
    l. 119-120: transformers' wav2vec2 names; ``final_layer_norm`` is decayed);
    its GLUE reference excludes ``bias`` and ``LayerNorm.weight``
    (``nlp/run_glue_linformer.py`` l. 508-517): ``norm_modules=["LayerNorm"]``.

    Example
    -------
    >>> [excluded_from_weight_decay(n, ["layer_norm"]) for n in
    ...  ["encoder.layers.0.layer_norm.weight", "encoder.layers.0.final_layer_norm.weight",
    ...   "encoder.layers.0.attention.q_proj.bias", "encoder.layers.0.attention.q_proj.weight"]]
    [True, False, True, False]
    """
    parts = name.split(".")
    return parts[-1] == "bias" or (len(parts) > 1 and parts[-2] in norm_modules)


def build_optimizer(
    opt_class: Callable,
    params: Sequence[nn.Parameter],
    model: nn.Module,
    new_params_lr: Optional[float] = None,
    no_decay: Optional[Sequence[str]] = None,
) -> torch.optim.Optimizer:
    """``opt_class(params)``, or groups when ``new_params_lr`` or ``no_decay`` is set.

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
    no_decay : sequence of str, optional
        Names of norm modules (``layer_norm``, ``LayerNorm``): their weights and
        every bias of ``model`` get a group with ``weight_decay: 0``
        (:func:`excluded_from_weight_decay`); None: weight decay on all.

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
    >>> opt = build_optimizer(lambda p: torch.optim.AdamW(p, lr=1e-4, weight_decay=0.1), list(student.parameters()),
    ...                       student, no_decay=["LayerNorm"])
    >>> [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups]
    [(12, 0.1), (13, 0.0)]
    """
    if new_params_lr is None and no_decay is None:
        return opt_class(params)
    new_ids: Set[int] = set()
    if new_params_lr is not None:
        new_ids = {id(p) for _, p in new_parameters(model)}
        if not new_ids:
            raise ValueError(
                f"hparams `new_params_lr: {new_params_lr}`: {type(model).__name__} has no parameters that a "
                "conversion created (it is not a to_linear_time student); remove the key or set it to null"
            )
    plain_ids: Set[int] = set()
    if no_decay is not None:
        plain_ids = {id(p) for name, p in model.named_parameters() if excluded_from_weight_decay(name, no_decay)}
    groups: List[Dict] = []
    for new in (False, True):  # the kept parameters first: param_groups[0] is the student's rate
        for plain in (False, True):
            members = [p for p in params if (id(p) in new_ids) == new and (id(p) in plain_ids) == plain]
            if members:
                groups.append({"params": members, **({"weight_decay": 0.0} if plain else {}), "_new": new})
    new_flags = [group.pop("_new") for group in groups]
    optimizer = opt_class(groups)
    if new_params_lr is not None:
        base = optimizer.param_groups[0]["lr"]
        if not base > 0 or new_flags[0]:
            raise ValueError(
                f"new_params_lr: the kept parameters' lr must be > 0 to scale from, found {base}"
                + (" (every parameter is new)" if new_flags[0] else "")
            )
        for group, new in zip(optimizer.param_groups, new_flags):
            if new:
                group["lr_scale"] = float(new_params_lr) / base
                group["lr"] = float(new_params_lr)
    return optimizer


def sync_group_lrs(optimizer: torch.optim.Optimizer) -> None:
    """Set each group with an ``lr_scale`` to the first group's rate times that scale."""
    base = optimizer.param_groups[0]["lr"]
    for group in optimizer.param_groups[1:]:
        if "lr_scale" in group:
            group["lr"] = base * group["lr_scale"]
