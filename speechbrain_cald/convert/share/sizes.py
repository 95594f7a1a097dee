"""Size honesty: unique parameters (each shared tensor once) and bytes on disk, of a whole
model or of its encoder layers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Dict, Optional

from torch import nn

from speechbrain_cald.convert.share.weights import _tensor_key, save_shared_weights

__all__ = ["encoder_parameter_count", "size_report", "unique_parameter_count"]


def unique_parameter_count(model: nn.Module) -> int:
    """Number of parameters, each shared tensor counted once.

    Arguments
    ---------
    model : nn.Module
        Any model.

    Returns
    -------
    int

    Example
    -------
    >>> lin = nn.Linear(3, 2)
    >>> unique_parameter_count(nn.ModuleList([lin, lin]))
    8
    """
    seen = set()
    total = 0
    for p in model.parameters():
        key = _tensor_key(p)
        if key not in seen:
            seen.add(key)
            total += p.numel()
    return total


def encoder_parameter_count(model: nn.Module, family: Optional[str] = None) -> int:
    """Unique parameters of the encoder layers only (what sharing compresses).

    Arguments
    ---------
    model : nn.Module
        A teacher or student of a family in ``convert.families.FAMILIES``.
    family : str, optional
        Force a family entry.

    Returns
    -------
    int
        Unique parameters under ``family.layers(model)`` (shared layers and
        shared matrices counted once).
    """
    from speechbrain_cald.convert.families import find_family

    return unique_parameter_count(find_family(model, family).layers(model))


def size_report(model: nn.Module) -> Dict[str, int]:
    """Unique parameters, parameter references and bytes on disk of ``model``.

    Arguments
    ---------
    model : nn.Module
        Any model.

    Returns
    -------
    dict
        ``unique_parameters``; ``parameter_references`` (what a naive count over
        ``state_dict`` gives, shared tensors counted at every use);
        ``disk_bytes`` (safetensors file of the deduplicated state_dict).

    Example
    -------
    >>> lin = nn.Linear(3, 2)
    >>> r = size_report(nn.ModuleList([lin, lin]))
    >>> r["unique_parameters"], r["parameter_references"]
    (8, 16)
    """
    params = {id(p) for p in model.parameters()}
    references = sum(
        t.numel() for name, t in model.state_dict(keep_vars=True).items() if id(t) in params
    )
    with tempfile.TemporaryDirectory() as tmp:
        disk = save_shared_weights(model, Path(tmp) / "weights.safetensors")
    return {
        "unique_parameters": unique_parameter_count(model),
        "parameter_references": references,
        "disk_bytes": disk,
    }
