"""A sharing student's weights on disk with each shared tensor stored once (safetensors refuses
aliases: duplicates are dropped and their names kept as metadata).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Tuple

import torch
from torch import nn

from speechbrain_cald.safe_load import load_weights_only

__all__ = ["dedup_state_dict", "load_shared_weights", "save_shared_weights"]


def _tensor_key(t: torch.Tensor) -> Tuple:
    storage = t.untyped_storage().data_ptr()
    return (t.device.type, storage, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def dedup_state_dict(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Split a state_dict into unique tensors and aliases (``name -> kept name``).

    Tensors that are views of the same memory with the same shape and stride
    are one tensor; the first name in ``state`` order is kept. Tensors that
    only partly overlap are cloned (safetensors refuses shared memory).

    Arguments
    ---------
    state : dict
        ``name -> tensor``.

    Returns
    -------
    unique : dict
        ``name -> tensor`` (contiguous), each memory once.
    aliases : dict
        ``dropped name -> kept name``.

    Example
    -------
    >>> w = torch.ones(2)
    >>> unique, aliases = dedup_state_dict({"a": w, "b": w})
    >>> list(unique), aliases
    (['a'], {'b': 'a'})
    """
    unique, aliases, first = {}, {}, {}
    storages = set()
    for name, t in state.items():
        key = _tensor_key(t)
        if key in first:
            aliases[name] = first[key]
            continue
        first[key] = name
        ptr = (t.device.type, t.untyped_storage().data_ptr())
        t = t.detach()
        if ptr in storages or not t.is_contiguous():
            t = t.contiguous().clone()
        else:
            storages.add(ptr)
        unique[name] = t
    return unique, aliases


def save_shared_weights(model: nn.Module, path: os.PathLike) -> int:
    """Save ``model.state_dict()`` storing each shared tensor once; returns bytes written.

    ``*.safetensors`` (aliases in the header metadata under ``"aliases"``) or
    anything else with ``torch.save`` (``{"state": unique, "aliases": ...}``).

    Arguments
    ---------
    model : nn.Module
        The student.
    path : path-like
        Output file.

    Returns
    -------
    int
        File size in bytes.
    """
    unique, aliases = dedup_state_dict(model.state_dict())
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        tensors = {k: v.cpu() for k, v in unique.items()}
        save_file(tensors, str(path), metadata={"aliases": json.dumps(aliases)})
    else:
        torch.save({"state": unique, "aliases": aliases}, path)
    return path.stat().st_size


def load_shared_weights(model: nn.Module, path: os.PathLike, strict: bool = True) -> nn.Module:
    """Load a file written by :func:`save_shared_weights` into ``model`` (same structure).

    Arguments
    ---------
    model : nn.Module
        A student with the saved structure (e.g. from :func:`apply_sharing_record`).
    path : path-like
        The file.
    strict : bool
        Passed to ``load_state_dict``.

    Returns
    -------
    nn.Module
        ``model``.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        unique = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    else:
        blob = load_weights_only(path)
        unique, aliases = blob["state"], blob["aliases"]
    missing = [kept for kept in aliases.values() if kept not in unique]
    if missing:
        raise KeyError(f"{path}: aliases point to tensors not in the file: {missing[:5]}")
    state = dict(unique)
    state.update({name: unique[kept] for name, kept in aliases.items()})
    model.load_state_dict(state, strict=strict)
    return model
