"""Family-agnostic layers: linear-time token mixers and weight-sharing layers.

Every token mixer maps ``x (B, T, D)`` and optional absolute ``lengths (B,)`` to
``y (B, T, D)`` with padded frames set to 0 (see ``docs/interfaces.md``).
Modules are imported lazily so that ``import speechbrain_cald.nnet`` stays cheap
and never touches optional CUDA packages.

Example
-------
>>> from speechbrain_cald.nnet import MIXERS
>>> sorted(MIXERS)
['bimamba2', 'linformer', 'mamba', 'mamba2']
"""

from __future__ import annotations

import importlib
from typing import Dict, Tuple

# public name -> (module, attribute); resolved on first use
_EXPORTS: Dict[str, Tuple[str, str]] = {
    "Mamba2": ("mamba2", "Mamba2"),
    "Mamba": ("mamba", "Mamba"),
    "BiMamba2": ("bimamba", "BiMamba2"),
    "LinformerAttention": ("linformer", "LinformerAttention"),
    "SpeechBrainAttention": ("dropin", "SpeechBrainAttention"),
}

# the one registry of token mixers, by the names YAML files, the converter and BiMamba2 use;
# a mixer class says itself whether it is causal (``cls.causal``)
MIXERS: Dict[str, str] = {
    "bimamba2": "BiMamba2",
    "mamba2": "Mamba2",
    "mamba": "Mamba",
    "linformer": "LinformerAttention",
}


def get_mixer(name: str) -> type:
    """Return the mixer class registered as ``name``.

    Arguments
    ---------
    name : str
        One of ``MIXERS`` (``bimamba2``, ``mamba2``, ``mamba``, ``linformer``).

    Returns
    -------
    type
        The ``torch.nn.Module`` subclass.
    """
    if name not in MIXERS:
        raise KeyError(f"unknown mixer '{name}': expected one of {sorted(MIXERS)}")
    return __getattr__(MIXERS[name])


def causal_mixers() -> list:
    """The names of ``MIXERS`` whose class is causal (``cls.causal``): an LM's mixers, BiMamba2's directions.

    Example
    -------
    >>> causal_mixers()
    ['mamba', 'mamba2']
    """
    return sorted(name for name in MIXERS if get_mixer(name).causal)


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MIXERS", "causal_mixers", "get_mixer", *_EXPORTS]
