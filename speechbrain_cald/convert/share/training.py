"""Which parameters of a sharing student train (adapters, LoRA deltas, residual low-rank and
diagonal terms), and ``shared_student``: ``to_shared`` plus that switch, for ``!apply:`` in
a recipe YAML.
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from torch import nn
from torch.nn.utils import parametrize

from speechbrain_cald.convert.share.transforms import to_shared
from speechbrain_cald.nnet.sharing import BottleneckAdapter, LowRankDelta, ResidualSharedLinear, ResidualWeight
from speechbrain_cald.safe_load import load_weights_only

__all__ = ["adapters_only", "shared_student", "sharing_trainable_parameters"]


def sharing_trainable_parameters(model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every adapter, LoRA delta, and residual low-rank / diagonal term.

    Arguments
    ---------
    model : nn.Module
        A student from :func:`to_shared` (or any model holding sharing layers).

    Returns
    -------
    list of (str, nn.Parameter)
        Each parameter once.
    """
    wanted = {}
    for module in model.modules():
        if isinstance(module, (BottleneckAdapter, LowRankDelta)):
            for p in module.parameters():
                wanted[id(p)] = p
        elif isinstance(module, ResidualSharedLinear):
            for p in (module.A, module.B, module.d):
                wanted[id(p)] = p
        elif parametrize.is_parametrized(module):
            for plist in module.parametrizations.values():
                if any(isinstance(p, ResidualWeight) for p in plist):
                    for p in plist._parameters.values():  # original0/1/2 = A, B, d
                        wanted[id(p)] = p
    return [(name, p) for name, p in model.named_parameters() if id(p) in wanted]


def adapters_only(model: nn.Module, keep: Iterable[str] = ()) -> List[str]:
    """Freeze everything except adapters / LoRA / residual low-rank + diagonal terms and ``keep``.

    Arguments
    ---------
    model : nn.Module
        The student (changed in place: ``requires_grad``).
    keep : iterable of str
        Regular expressions; parameters whose name matches one (``re.search``)
        stay trainable too (task heads, e.g. ``"^ctc_lin"``, ``"classifier"``).

    Returns
    -------
    list of str
        Names of the parameters left trainable.

    Example
    -------
    >>> net = nn.Sequential(nn.Linear(4, 4), BottleneckAdapter(4, 2), nn.Linear(4, 2))
    >>> adapters_only(net, keep=[r"^2\\."])  # doctest: +NORMALIZE_WHITESPACE
    ['1.down.weight', '1.down.bias', '1.up.weight', '1.up.bias', '1.norm.weight',
     '1.norm.bias', '2.weight', '2.bias']
    """
    patterns = [re.compile(k) for k in keep]
    train = {id(p) for _, p in sharing_trainable_parameters(model)}
    names = []
    for name, p in model.named_parameters():
        on = id(p) in train or any(pat.search(name) for pat in patterns)
        p.requires_grad_(on)
        if on:
            names.append(name)
    return names


_adapters_only = adapters_only  # shared_student's argument of the same name hides it


def shared_student(
    teacher: nn.Module,
    scheme: str = "recursive",
    adapters_only: bool = False,
    keep: Sequence[str] = (),
    init_from: Optional[os.PathLike] = None,
    **options,
) -> nn.Module:
    """:func:`to_shared` plus the adapter-tuning switch, for ``!apply:`` in a YAML.

    Arguments
    ---------
    teacher : nn.Module
        The teacher (or a container holding it, e.g. a recipe's ``ModuleDict``).
    scheme : str
        ``"recursive"`` or ``"residual"``.
    adapters_only : bool
        If True, only adapters / LoRA / residual low-rank + diagonal terms and
        the parameters matching ``keep`` are trained (:func:`adapters_only`).
    keep : sequence of str
        Regular expressions of parameter names that stay trainable with
        ``adapters_only`` (task heads, e.g. ``"^ctc_lin\\."``).
    init_from : path-like, optional
        A ``state_dict`` file (``torch.save``) of ``teacher``'s architecture to
        build the student from (shared-layer averages and SVDs need the
        teacher's trained weights, so a recipe that builds the architecture in
        YAML and loads weights later must name them here). ``teacher`` itself is
        not modified. If the file does not exist yet, a warning is given and the
        student is built from ``teacher``'s current weights (a YAML dry run; a
        recipe's own weight loading fails on the missing file right after).
    **options
        Passed to :func:`to_shared`.

    Returns
    -------
    nn.Module
        The student; ``student.cald_sharing["adapters_only"]`` says which mode.

    Example (YAML)
    --------------
    ::

        model: !apply:speechbrain_cald.convert.share.shared_student
            teacher: !ref <teacher_model>
            scheme: recursive
            adapter: bottleneck
            adapters_only: True
            keep: ['^ctc_lin\\.']
    """
    if init_from is not None:
        if Path(init_from).is_file():
            source = copy.deepcopy(teacher)
            state = load_weights_only(init_from)
            try:
                source.load_state_dict(state)
            except RuntimeError as err:
                raise RuntimeError(
                    f"shared_student: init_from '{init_from}' does not fit the teacher architecture "
                    f"{type(teacher).__name__}: {err}"
                ) from None
            teacher = source
        else:
            warnings.warn(
                f"shared_student: init_from '{init_from}' does not exist; the student is built from "
                "the teacher's current weights (train the teacher first for a real run)"
            )
    student = to_shared(teacher, scheme, **options)
    if adapters_only:
        trainable = _adapters_only(student, keep)
        if not trainable:
            raise ValueError(
                "shared_student: adapters_only=True left no trainable parameter (use an adapter, "
                "LoRA or the residual scheme, or name task heads in `keep`)"
            )
    student.cald_sharing["adapters_only"] = bool(adapters_only)
    return student
