"""How the converter builds each token mixer: ``MIXER_SPECS`` (name -> ``MixerSpec``).

The classes come from ``speechbrain_cald.nnet.get_mixer``; this table adds what
conversion needs beyond the class: whether the mixer is causal and which
constructor arguments the replaced attention supplies (``d_model`` always;
``num_heads`` and ``max_len`` for Linformer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

from torch import nn

from speechbrain_cald.nnet import get_mixer

__all__ = ["MixerSpec", "MIXER_SPECS", "BuildContext", "resolve_mixer", "mixer_reference"]


@dataclass
class BuildContext:
    """What a builder may read: the attention's sizes, the teacher's limits, and a
    dict shared by all layers of one conversion (for layer-shared parameters)."""

    d_model: int
    num_heads: int
    max_positions: Optional[int]
    family: str
    shared: Dict[str, Any]


def build_plain(cls: type, ctx: BuildContext, options: Dict[str, Any]) -> nn.Module:
    """``cls(d_model, **options)`` (Mamba, Mamba2, BiMamba2, custom mixers)."""
    return cls(ctx.d_model, **options)


def build_linformer(cls: type, ctx: BuildContext, options: Dict[str, Any]) -> nn.Module:
    """``LinformerAttention(d_model, num_heads, max_len, **options)``; ``max_len``
    defaults to the teacher's maximum positions; ``share="layer"`` builds one
    ``LinformerProjection`` and gives it to every layer."""
    options = dict(options)
    max_len = options.pop("max_len", None) or ctx.max_positions
    if max_len is None:
        raise ValueError(
            f"mixer 'linformer' needs max_len (the longest sequence in frames) for family "
            f"'{ctx.family}', whose teacher has no maximum length: pass max_len=... "
            "(--mixer-option max_len=... on the command line)"
        )
    num_heads = options.pop("num_heads", ctx.num_heads)
    if options.get("share") == "layer" and options.get("shared_proj") is None:
        # one projection object for every layer of this conversion
        shared = ctx.shared.get("linformer_layer_proj")
        if shared is None:
            from speechbrain_cald.nnet.linformer import LinformerProjection

            shared = LinformerProjection(int(max_len), options.get("k", 256))
            ctx.shared["linformer_layer_proj"] = shared
        options["shared_proj"] = shared
    return cls(ctx.d_model, num_heads, int(max_len), **options)


@dataclass
class MixerSpec:
    """``causal``: output at t depends only on frames <= t; ``build(cls, ctx, options)``."""

    causal: bool
    build: Callable[[type, BuildContext, Dict[str, Any]], nn.Module] = build_plain


MIXER_SPECS: Dict[str, MixerSpec] = {
    "bimamba2": MixerSpec(causal=False),
    "mamba2": MixerSpec(causal=True),
    "mamba": MixerSpec(causal=True),
    "linformer": MixerSpec(causal=False, build=build_linformer),
}


def mixer_reference(cls: type) -> str:
    """``"module:QualName"`` of a mixer class (what a saved student records for custom mixers)."""
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_mixer(mixer: Union[str, type]) -> Tuple[str, type, MixerSpec]:
    """``(recorded name, class, spec)`` for a registry name, a ``"module:Class"``
    reference or a mixer class (custom classes: ``cls(d_model, **options)``, causal if
    ``cls.causal`` is True).

    Example
    -------
    >>> name, cls, spec = resolve_mixer("mamba2")
    >>> name, cls.__name__, spec.causal
    ('mamba2', 'Mamba2', True)
    """
    if isinstance(mixer, str) and ":" in mixer:
        import importlib

        module, _, qualname = mixer.partition(":")
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        mixer = obj
    if isinstance(mixer, str):
        if mixer not in MIXER_SPECS:
            raise KeyError(
                f"unknown mixer '{mixer}': expected one of {sorted(MIXER_SPECS)}, a mixer class, "
                "or a 'module:Class' reference"
            )
        return mixer, get_mixer(mixer), MIXER_SPECS[mixer]
    if isinstance(mixer, type) and issubclass(mixer, nn.Module):
        return mixer_reference(mixer), mixer, MixerSpec(causal=bool(getattr(mixer, "causal", False)))
    raise TypeError(f"mixer: expected a name, a 'module:Class' string or an nn.Module class, found {mixer!r}")
