"""Starting weights of a CALD run: which checkpoint each network loads, as the guide says.

A guide names the weights the student and the teacher start from
(``Guide.student_init`` / ``Guide.teacher_init``: ``"finetuned"``,
``"pretrained"`` or ``"snapshots"``). A recipe's YAML says where each lives:

- ``finetuned_ckpt``: stage 2's fine-tuned teacher, ``<teacher_folder>/model.ckpt``;
- ``pretrained_ckpt``: the original pretrained model's ``state_dict`` file, or
  ``null`` when the YAML already builds the model from the pretrained weights
  (a transformers model loaded from ``pretrained_dir``): the weights as built
  are then the pretrained ones;
- ``"snapshots"``: the waypoint guide loads the teacher's snapshots itself.

A converted student shares every key with its teacher but the replaced
attention's, so it loads non-strictly (every kept weight is copied; a
checkpoint sharing nothing with the model is an error); a teacher loads strictly.
"""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional

import torch
from torch import nn

from speechbrain_cald.distill.guides import select_guide
from speechbrain_cald.safe_load import load_weights_only

__all__ = ["WEIGHT_KEYS", "build_modules", "load_weights"]

# guide's teacher_init / student_init -> hparams key of the checkpoint to start from
# (None: the waypoint guide loads the teacher's weights itself)
WEIGHT_KEYS: Dict[str, Optional[str]] = {
    "finetuned": "finetuned_ckpt",
    "pretrained": "pretrained_ckpt",
    "snapshots": None,
}


def load_weights(module: nn.Module, path: str, what: str, strict: bool = True) -> int:
    """Load a ``state_dict`` file into ``module``; non-strict keeps every key the two share.

    Arguments
    ---------
    module : torch.nn.Module
        The network to fill.
    path : str
        A file written by ``torch.save(model.state_dict(), path)``.
    what : str
        Who is loading, for messages (``"student (finetuned)"``).
    strict : bool
        Every key must match (a teacher) or only the shared ones are copied
        (a converted student).

    Returns
    -------
    int
        The number of tensors copied.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "w.ckpt")
    >>> torch.save(nn.Linear(2, 2).state_dict(), path)
    >>> load_weights(nn.Sequential(nn.Linear(2, 2)), path, "student", strict=False)
    Traceback (most recent call last):
    ...
    ValueError: student: no weight of '...' fits the model (architecture mismatch?): model keys ['0.bias', '0.weight'], checkpoint keys ['bias', 'weight']
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what}: checkpoint '{path}' does not exist (run the teacher stage first)")
    state = load_weights_only(path)
    if strict:
        module.load_state_dict(state)
        return len(state)
    own = module.state_dict()
    shared = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not shared:
        raise ValueError(
            f"{what}: no weight of '{path}' fits the model (architecture mismatch?): "
            f"model keys {sorted(own)[:5]}, checkpoint keys {sorted(state)[:5]}"
        )
    module.load_state_dict(shared, strict=False)
    print(f"{what}: {len(shared)} of {len(own)} tensors from {path}; new: {len(own) - len(shared)}")
    return len(shared)


def build_modules(hparams: Mapping) -> Dict[str, nn.Module]:
    """``modules`` for ``DistillBrain``, with the starting weights the guide asks for.

    Arguments
    ---------
    hparams : mapping
        The loaded YAML: ``model``; for a student also ``teacher``, ``guide``
        (``guides``), and the checkpoint keys of ``WEIGHT_KEYS``. Without a
        ``teacher`` key the run trains the model itself (stage 2): the model is
        returned as built, or with the weights of ``pretrained_ckpt`` when that
        key is set (fine-tuning the teacher from the pretrained model).

    Returns
    -------
    dict
        ``{"model": ...}`` and, when the guide needs one, ``"teacher"``.

    Example
    -------
    >>> import tempfile
    >>> net = nn.Linear(2, 2)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.ckpt")
    >>> torch.save(net.state_dict(), path)
    >>> hp = {"model": nn.Linear(2, 2), "teacher": nn.Linear(2, 2), "guide": "target",
    ...       "finetuned_ckpt": path, "pretrained_ckpt": None}
    >>> modules = build_modules(hp)  # doctest: +ELLIPSIS
    student (finetuned): 2 of 2 tensors from ...
    >>> torch.equal(modules["teacher"].weight, net.weight), torch.equal(modules["model"].weight, net.weight)
    (True, True)
    >>> sorted(build_modules(dict(hp, guide="unguided")))  # pretrained: the weights as built
    ['model']
    """
    modules = {"model": hparams["model"]}
    if "teacher" not in hparams:  # training the transformer itself: pre-training, or fine-tuning from pretrained_ckpt
        if hparams.get("pretrained_ckpt"):
            load_weights(modules["model"], hparams["pretrained_ckpt"], "model (pretrained)")
        return modules
    guide = select_guide(hparams["guide"], hparams.get("guides"))
    student_ckpt = _checkpoint(hparams, guide.student_init)
    if student_ckpt:
        load_weights(modules["model"], student_ckpt, f"student ({guide.student_init})", strict=False)
    if guide.needs_teacher:
        modules["teacher"] = hparams["teacher"]
        teacher_ckpt = _checkpoint(hparams, guide.teacher_init)
        if teacher_ckpt:
            load_weights(modules["teacher"], teacher_ckpt, f"teacher ({guide.teacher_init})")
    return modules


def _checkpoint(hparams: Mapping, init: Optional[str]) -> Optional[str]:
    """The file for ``init`` (None: keep the weights as built)."""
    if init is None:
        return None
    key = WEIGHT_KEYS[init]
    if key is None:
        return None
    if key not in hparams:
        raise KeyError(
            f"hparams: the guide starts a network from its {init} weights, so the YAML needs "
            f"`{key}` (a state_dict file, or null for the weights as built)"
        )
    return hparams[key]
