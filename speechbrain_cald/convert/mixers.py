"""How the converter builds each token mixer: ``MIXER_SPECS`` (name -> ``MixerSpec``).

Mixer names and classes come from the one registry, ``speechbrain_cald.nnet.MIXERS``
(``get_mixer``), and a class says itself whether it is causal (``cls.causal``);
``MIXER_SPECS`` has one entry per registered name and adds what conversion needs
beyond the class: the converter's default options, and which constructor arguments
the replaced attention supplies (``d_model`` always; ``num_heads`` and ``max_len``
for Linformer).

Defaults when ``to_linear_time`` gets no options: ``bimamba2`` takes the CALD
paper's speech sizes (``expand=1, d_state=128, headdim=64``; chunk 128, faster
than 256 on CPU); ``mamba2`` / ``mamba`` / ``linformer`` their class defaults
(Linformer ``k=256``, ``max_len`` = the teacher's maximum positions). For Mamba2
mixers, a ``headdim`` that does not divide ``expand * d_model`` (tiny models)
falls back to their greatest common divisor unless ``headdim`` was given
explicitly. The resolved options, completed with every JSON-able default of the
mixer's constructor (and, for BiMamba2, of its directional mixer), are what a
student records and reloads with, so a later change of a default cannot change
a saved student silently.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple, Union

from torch import nn

from speechbrain_cald.nnet import MIXERS, get_mixer

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


def fit_headdim(ctx: BuildContext, options: Dict[str, Any], default_headdim: int = 64) -> Dict[str, Any]:
    """Mamba2-style options with ``headdim`` dividing ``expand * d_model`` when not given.

    Example
    -------
    >>> ctx = BuildContext(d_model=32, num_heads=2, max_positions=None, family="x", shared={})
    >>> fit_headdim(ctx, {"expand": 1})["headdim"]
    32
    >>> fit_headdim(ctx, {"expand": 1, "headdim": 16})["headdim"]
    16
    """
    options = dict(options)
    if "headdim" not in options:
        d_inner = int(options.get("expand", 2) * ctx.d_model)
        options["headdim"] = default_headdim if d_inner % default_headdim == 0 else math.gcd(d_inner, default_headdim)
    return options


def resolve_linformer(ctx: BuildContext, options: Dict[str, Any]) -> Dict[str, Any]:
    """``max_len`` defaults to the teacher's maximum positions (required otherwise)."""
    options = dict(options)
    if options.get("max_len") is None:
        if ctx.max_positions is None:
            raise ValueError(
                f"mixer 'linformer' needs max_len (the longest sequence in frames) for family "
                f"'{ctx.family}', whose teacher has no maximum length: pass max_len=... "
                "(--mixer-option max_len=... on the command line)"
            )
        options["max_len"] = int(ctx.max_positions)
    return options


def build_linformer(cls: type, ctx: BuildContext, options: Dict[str, Any]) -> nn.Module:
    """``LinformerAttention(d_model, num_heads, max_len, **options)``; ``share="layer"``
    builds one ``LinformerProjection`` and gives it to every layer."""
    options = dict(options)
    max_len = options.pop("max_len")
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


# constructor arguments the converter supplies or that are not configuration
_SUPPLIED = {"self", "d_model", "num_heads", "max_len", "device", "dtype", "shared_proj", "layer_idx"}


def _json_default(value: Any):
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list) and all(isinstance(v, (int, float, str, bool)) for v in value):
        if all(math.isfinite(v) for v in value if isinstance(v, float)):
            return value
    if value is None or isinstance(value, (int, str, bool)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise TypeError  # not strict JSON: leave it to the constructor


def constructor_defaults(cls: type, options: Dict[str, Any]) -> Dict[str, Any]:
    """JSON-able keyword defaults of ``cls.__init__``; a ``mixer=<name>`` argument with
    ``**kwargs`` (BiMamba2) adds the defaults of the named inner mixer class.

    Example
    -------
    >>> from speechbrain_cald.nnet import get_mixer
    >>> d = constructor_defaults(get_mixer("bimamba2"), {})
    >>> d["mixer"], d["residual_inside"], d["d_conv"]
    ('mamba2', False, 4)
    """
    out: Dict[str, Any] = {}
    params = inspect.signature(cls.__init__).parameters
    for name, p in params.items():
        if name in _SUPPLIED or p.default is inspect.Parameter.empty:
            continue
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        try:
            out[name] = _json_default(p.default)
        except TypeError:
            continue
    has_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
    inner = options.get("mixer", out.get("mixer"))
    if has_kwargs and isinstance(inner, str) and inner in MIXERS and get_mixer(inner) is not cls:
        out = {**constructor_defaults(get_mixer(inner), {}), **out}
    return out


# the CALD paper's BiMamba2 (speech) sizes; chunk 128 is faster than 256 on CPU
BIMAMBA2_PAPER = dict(expand=1, d_state=128, chunk_size=128)


def resolve_bimamba2(ctx: BuildContext, options: Dict[str, Any]) -> Dict[str, Any]:
    """The paper's sizes and a fitted ``headdim`` for Mamba2 directions; Mamba v1
    directions (``mixer="mamba"``) keep their own defaults."""
    if options.get("mixer", "mamba2") != "mamba2":
        return dict(options)
    return fit_headdim(ctx, {**BIMAMBA2_PAPER, **options})


def _no_resolve(ctx: BuildContext, options: Dict[str, Any]) -> Dict[str, Any]:
    return dict(options)


@dataclass
class MixerSpec:
    """How to build one mixer.

    ``defaults``: options used unless given. ``resolve(ctx, options) -> options``:
    fill teacher-dependent options (recorded in the student).
    ``build(cls, ctx, options) -> module``.
    """

    defaults: Dict[str, Any] = field(default_factory=dict)
    resolve: Callable[[BuildContext, Dict[str, Any]], Dict[str, Any]] = _no_resolve
    build: Callable[[type, BuildContext, Dict[str, Any]], nn.Module] = build_plain

    def options(self, cls: type, ctx: BuildContext, given: Dict[str, Any]) -> Dict[str, Any]:
        """The full constructor options for ``ctx``: the converter's defaults, then
        ``given``, resolved, then completed with the constructor's own defaults."""
        options = self.resolve(ctx, {**self.defaults, **given})
        return {**constructor_defaults(cls, options), **options}


# the mixers whose conversion differs from ``cls(d_model, **options)`` with the options given
_SPECIAL: Dict[str, MixerSpec] = {
    "bimamba2": MixerSpec(resolve=resolve_bimamba2),
    "mamba2": MixerSpec(resolve=fit_headdim),
    "linformer": MixerSpec(resolve=resolve_linformer, build=build_linformer),
}
MIXER_SPECS: Dict[str, MixerSpec] = {name: _SPECIAL.get(name, MixerSpec()) for name in MIXERS}


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
    >>> name, cls.__name__, cls.causal
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
        if mixer not in MIXERS:
            raise KeyError(
                f"unknown mixer '{mixer}': expected one of {sorted(MIXERS)}, a mixer class, "
                "or a 'module:Class' reference"
            )
        return mixer, get_mixer(mixer), MIXER_SPECS[mixer]
    if isinstance(mixer, type) and issubclass(mixer, nn.Module):
        return mixer_reference(mixer), mixer, MixerSpec()
    raise TypeError(f"mixer: expected a name, a 'module:Class' string or an nn.Module class, found {mixer!r}")
