"""Parameter-sharing students: recursive (MiniALBERT / Relaxed Recursive) and residual.

``to_shared(model, scheme="recursive" | "residual", **options)`` deep-copies a
teacher of any family in ``convert.families.FAMILIES`` (also one already made
linear-time by ``to_linear_time``) and rebuilds its encoder layers:

``recursive``
    The encoder's ``ModuleList`` becomes ``num_steps`` :class:`RecursiveStep`
    modules that all reference ``num_unique`` shared layer objects (step ``i``
    uses unique layer ``i mod num_unique`` with ``tying="cycle"``, or blocks of
    adjacent steps with ``tying="block"``). Step ``i`` stands for teacher layer
    ``m(i)`` (:func:`step_teacher_layers`; 6 steps of a 12-layer teacher map to
    layers 2, 4, ..., 12, as MiniALBERT). Shared-layer init ``average`` (mean of
    the teacher layers the unique layer stands for), ``stepwise`` (evenly spaced
    teacher layers) or ``random``. Per-step adapters: ``bottleneck`` (one
    :class:`~speechbrain_cald.nnet.sharing.BottleneckAdapter` on the input of
    the attention and one on the input of each FFN, through forward pre-hooks
    that exist only while the step runs), ``lora`` (a per-step low-rank delta on
    every 2-D weight of attention and FFN, initialised by truncated SVD of
    teacher minus shared weight, applied with ``torch.func.functional_call`` so
    it works for weights a module reads directly, e.g.
    ``nn.MultiheadAttention.in_proj_weight``), or ``none``.

``residual``
    Layers stay separate modules; every 2-D weight of attention and FFN in each
    group of ``group_size`` adjacent layers becomes ``S_g + A_l B_l + D_l``
    (:class:`~speechbrain_cald.nnet.sharing.ResidualWeight`): ``S_g`` the group
    mean, ``A_l B_l`` the rank-``rank`` truncated SVD of the layer's residual,
    ``D_l`` the wrapped diagonal of what remains. Biases, norms, convolutions
    stay per layer. Exact at full rank.

Which modules hold "attention" and "FFN" in each family is the small registry
``SHARING_SITES`` here (attention itself comes from the family entry). The
student carries ``model.cald_sharing`` (a JSON-able record) so it can be
rebuilt before loading weights (:func:`apply_sharing_record`).

Size honesty: :func:`unique_parameter_count` counts each shared tensor once,
:func:`save_shared_weights` stores each shared tensor once (safetensors refuses
aliases, so duplicates are dropped and their names kept as metadata) and
:func:`size_report` gives unique parameters and bytes on disk. Command line:
``python -m speechbrain_cald.convert.share TEACHER_DIR STUDENT_DIR --scheme residual``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.utils import parametrize

from speechbrain_cald.nnet.sharing import (
    BottleneckAdapter,
    LowRankDelta,
    ResidualSharedLinear,
    ResidualWeight,
    SharedWeight,
)
from speechbrain_cald.safe_load import load_weights_only

__all__ = [
    "SCHEMES",
    "SHARING_SITES",
    "SharingSites",
    "RecursiveStep",
    "to_shared",
    "step_teacher_layers",
    "apply_sharing_record",
    "adapters_only",
    "shared_student",
    "sharing_trainable_parameters",
    "unique_parameter_count",
    "encoder_parameter_count",
    "dedup_state_dict",
    "save_shared_weights",
    "load_shared_weights",
    "size_report",
    "save_shared_student",
    "load_shared_student",
    "main",
]


# --------------------------------------------------------------------------- sites
@dataclass(frozen=True)
class SharingSites:
    """Where the FFN sits in one family's layer (attention comes from the family).

    Arguments
    ---------
    ffn_inputs : tuple of str
        Dotted paths (inside a layer) of modules whose *input* is the FFN input:
        a bottleneck adapter is applied there. Paths missing in a layer are
        skipped (one family may have several layer types).
    ffn_weights : tuple of str
        Dotted paths of modules whose 2-D weights are the FFN weights (and, for
        families whose attention output projection sits outside the attention
        module, that projection too).
    """

    ffn_inputs: Tuple[str, ...]
    ffn_weights: Tuple[str, ...]


#: family name -> sites; a family missing here cannot be shared (error lists these)
SHARING_SITES: Dict[str, SharingSites] = {
    "wav2vec2": SharingSites(("feed_forward",), ("feed_forward",)),
    "hubert": SharingSites(("feed_forward",), ("feed_forward",)),
    "wavlm": SharingSites(("feed_forward",), ("feed_forward",)),
    "wav2vec2_conformer": SharingSites(("ffn1", "ffn2"), ("ffn1", "ffn2")),
    "whisper": SharingSites(("fc1",), ("fc1", "fc2")),
    "bert": SharingSites(("intermediate",), ("attention.output", "intermediate", "output")),
    "roberta": SharingSites(("intermediate",), ("attention.output", "intermediate", "output")),
    "gpt_neox": SharingSites(("mlp",), ("mlp",)),
    "speechbrain_transformer_asr": SharingSites(
        ("pos_ffn", "ffn_module1", "ffn_module2"), ("pos_ffn", "ffn_module1", "ffn_module2")
    ),
}


def _get_path(module: nn.Module, path: str) -> nn.Module:
    for name in path.split("."):
        module = getattr(module, name)
    return module


def _has_path(module: nn.Module, path: str) -> bool:
    try:
        _get_path(module, path)
        return True
    except AttributeError:
        return False


def _family_and_sites(model: nn.Module, family: Optional[str]):
    from speechbrain_cald.convert.families import find_family

    fam = find_family(model, family)
    if fam.name not in SHARING_SITES:
        raise ValueError(
            f"to_shared: family '{fam.name}' has no entry in "
            f"speechbrain_cald.convert.share.SHARING_SITES (supported: {sorted(SHARING_SITES)}); "
            "add SharingSites(ffn_inputs=..., ffn_weights=...) for it"
        )
    return fam, SHARING_SITES[fam.name]


def _replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put ``new`` wherever ``root`` holds ``old`` (found by identity)."""
    for name, module in root.named_modules(remove_duplicate=False):
        for child_name, child in module._modules.items():
            if child is old:
                setattr(module, child_name, new)
                return
    raise ValueError(f"to_shared: module {type(old).__name__} not found in {type(root).__name__}")


def _is_matrix(p: torch.Tensor) -> bool:
    """A 2-D weight, or a pointwise convolution ``(out, in, 1)`` (a matrix in disguise)."""
    return p.dim() == 2 or (p.dim() == 3 and p.shape[-1] == 1 and p.shape[1] > 1)


def _weight_keys(
    layer: nn.Module, attention_path: str, sites: SharingSites, extra_sites: Sequence[str] = ()
) -> List[str]:
    """Dotted names (inside ``layer``) of every matrix weight of attention, FFN and ``extra_sites``.

    A weight is a parameter whose name ends in ``weight``, with 2 dimensions
    (or a pointwise convolution kernel ``(out, in, 1)``), not owned by an
    embedding or a norm (e.g. ``self_att.att.in_proj_weight``,
    ``pos_ffn.ffn.0.weight``). Parametrized weights are skipped.
    """
    keys = []
    for site in (attention_path, *sites.ffn_weights, *extra_sites):
        if not _has_path(layer, site):
            if site in extra_sites:
                raise ValueError(
                    f"to_shared: extra site '{site}' is not a submodule of {type(layer).__name__}"
                )
            continue
        for sub_name, sub in _get_path(layer, site).named_modules():
            if isinstance(sub, (nn.Embedding, nn.LayerNorm)) or parametrize.is_parametrized(sub):
                continue
            for p_name, p in sub._parameters.items():
                if p is not None and _is_matrix(p) and p_name.endswith("weight"):
                    keys.append(".".join(x for x in (site, sub_name, p_name) if x))
    return list(dict.fromkeys(keys))


def _owner_and_name(layer: nn.Module, key: str) -> Tuple[nn.Module, str]:
    owner_path, _, name = key.rpartition(".")
    return (_get_path(layer, owner_path) if owner_path else layer), name


def _param(layer: nn.Module, key: str) -> torch.Tensor:
    owner, name = _owner_and_name(layer, key)
    return getattr(owner, name)


def _ffn_input_paths(layer: nn.Module, sites: SharingSites) -> List[str]:
    return [p for p in sites.ffn_inputs if _has_path(layer, p)]


def _hidden_size(layer: nn.Module, sites: SharingSites) -> int:
    """``D``: in_features of the first linear layer of the first FFN."""
    for path in _ffn_input_paths(layer, sites):
        for sub in _get_path(layer, path).modules():
            if isinstance(sub, nn.Linear):
                return sub.in_features
    raise ValueError(f"to_shared: no nn.Linear found in the FFN {sites.ffn_inputs} of {type(layer).__name__}")


# --------------------------------------------------------------------------- layer map
def step_teacher_layers(num_steps: int, num_layers: int) -> List[int]:
    """Teacher layer (0-based) each student step stands for: ``round((i+1) L / n) - 1``.

    Arguments
    ---------
    num_steps : int
        ``n`` student steps (at most ``num_layers``).
    num_layers : int
        ``L`` teacher layers.

    Returns
    -------
    list of int
        ``m(i)`` for ``i < n``; the last step always maps to the last layer.

    Example
    -------
    >>> [m + 1 for m in step_teacher_layers(6, 12)]  # MiniALBERT: layers 2, 4, ..., 12
    [2, 4, 6, 8, 10, 12]
    >>> step_teacher_layers(4, 4)
    [0, 1, 2, 3]
    """
    if not 1 <= num_steps <= num_layers:
        raise ValueError(f"num_steps must be in [1, {num_layers}] (teacher layers), found {num_steps}")
    return [int(round((i + 1) * num_layers / num_steps)) - 1 for i in range(num_steps)]


def _unique_of_step(num_steps: int, num_unique: int, tying: str) -> List[int]:
    if tying == "cycle":
        return [i % num_unique for i in range(num_steps)]
    if tying == "block":
        return [i * num_unique // num_steps for i in range(num_steps)]
    raise ValueError(f"tying must be 'cycle' or 'block', found '{tying}'")


# --------------------------------------------------------------------------- recursive
def _adapt_first_input(adapter: nn.Module):
    """Forward pre-hook (with kwargs) applying ``adapter`` to a module's main input.

    The main input is the first positional tensor, else the first tensor keyword
    argument; every argument that *is* that tensor (``q = k = v`` in
    self-attention) gets the adapted one.
    """

    def hook(module, args, kwargs):
        x = next((a for a in args if torch.is_tensor(a)), None)
        if x is None:
            x = next((v for v in kwargs.values() if torch.is_tensor(v)), None)
        if x is None:
            return None
        y = adapter(x)
        args = tuple(y if a is x else a for a in args)
        kwargs = {k: (y if v is x else v) for k, v in kwargs.items()}
        return args, kwargs

    return hook


class RecursiveStep(nn.Module):
    """One recursion step: a shared layer plus this step's own adapters.

    Arguments
    ---------
    layer : nn.Module
        The shared layer (the same object in several steps).
    adapter_paths : sequence of str
        Dotted paths inside ``layer`` whose input gets an adapter, in the order
        of ``adapters``.
    adapters : nn.ModuleList, optional
        This step's bottleneck adapters.
    lora_keys : sequence of str
        Dotted names of the layer weights that get this step's low-rank delta.
    lora : nn.ModuleList, optional
        This step's :class:`LowRankDelta` modules, in the order of ``lora_keys``.
    index : int, optional
        The step's position; while the step runs, every ``layer_idx`` attribute
        inside the shared layer (transformers' key-value cache slot) is set to it,
        so a causal LM's cache keeps one slot per step, not per shared layer.

    The call signature is the shared layer's; its output is returned as is.
    """

    def __init__(
        self,
        layer: nn.Module,
        adapter_paths: Sequence[str] = (),
        adapters: Optional[nn.ModuleList] = None,
        lora_keys: Sequence[str] = (),
        lora: Optional[nn.ModuleList] = None,
        index: Optional[int] = None,
    ):
        super().__init__()
        self.layer = layer
        self.index = index
        self.adapter_paths = list(adapter_paths)
        self.adapters = adapters if adapters is not None else nn.ModuleList()
        self.lora_keys = list(lora_keys)
        self.lora = lora if lora is not None else nn.ModuleList()
        if len(self.adapter_paths) != len(self.adapters) or len(self.lora_keys) != len(self.lora):
            raise ValueError("RecursiveStep: one adapter per path and one delta per LoRA key expected")

    def forward(self, *args, **kwargs):
        # hooks live only while this step runs: the shared layer serves every step
        handles = [
            _get_path(self.layer, path).register_forward_pre_hook(_adapt_first_input(ad), with_kwargs=True)
            for path, ad in zip(self.adapter_paths, self.adapters)
        ]
        slots = []
        if self.index is not None:
            slots = [m for m in self.layer.modules() if isinstance(getattr(m, "layer_idx", None), int)]
        saved = [m.layer_idx for m in slots]
        for m in slots:
            m.layer_idx = self.index
        try:
            if not self.lora_keys:
                return self.layer(*args, **kwargs)
            weights = {k: _param(self.layer, k) + delta() for k, delta in zip(self.lora_keys, self.lora)}
            return torch.func.functional_call(self.layer, weights, args, kwargs, strict=False)
        finally:
            for handle in handles:
                handle.remove()
            for m, idx in zip(slots, saved):
                m.layer_idx = idx


def _check_same_structure(layers: Sequence[nn.Module]) -> None:
    """Recursive sharing needs layers with one structure (names and shapes)."""
    first = {k: tuple(v.shape) for k, v in layers[0].state_dict().items()}
    for i, layer in enumerate(layers[1:], start=1):
        other = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
        if other != first:
            only0 = sorted(set(first) - set(other))[:3]
            only_i = sorted(set(other) - set(first))[:3]
            shapes = [k for k in set(first) & set(other) if first[k] != other[k]][:3]
            raise ValueError(
                f"to_shared(recursive): encoder layers 0 and {i} differ in structure (only in 0: "
                f"{only0}, only in {i}: {only_i}, different shapes: {shapes}); one layer cannot "
                "stand for both (e.g. WavLM keeps its relative position bias in layer 0). "
                "Use scheme='residual' for this model"
            )


def _average_layer(layers: Sequence[nn.Module]) -> Dict[str, torch.Tensor]:
    states = [layer.state_dict() for layer in layers]
    out = {}
    for key, value in states[0].items():
        if torch.is_floating_point(value):
            out[key] = torch.stack([s[key].float() for s in states]).mean(0).to(value.dtype)
        else:
            out[key] = value
    return out


def _reset(module: nn.Module) -> None:
    for sub in module.modules():
        if sub is not module and hasattr(sub, "reset_parameters"):
            sub.reset_parameters()


_SHARED_INITS = ("average", "stepwise", "random")
_ADAPTERS = ("bottleneck", "lora", "none")


def _to_recursive(
    student: nn.Module,
    fam,
    sites: SharingSites,
    num_unique: int = 1,
    num_steps: Optional[int] = None,
    tying: str = "cycle",
    init: str = "average",
    adapter: str = "bottleneck",
    adapter_dim: int = 48,
    adapter_norm: bool = True,
    lora_rank: int = 8,
    lora_scale: float = 1.0,
    skip_init: bool = False,
) -> Dict[str, object]:
    layers = fam.layers(student)
    L = len(layers)
    n = L if num_steps is None else int(num_steps)
    m = step_teacher_layers(n, L)
    if not 1 <= num_unique <= n:
        raise ValueError(f"num_unique must be in [1, num_steps={n}], found {num_unique}")
    if init not in _SHARED_INITS:
        raise ValueError(f"init must be one of {_SHARED_INITS}, found '{init}'")
    if adapter not in _ADAPTERS:
        raise ValueError(f"adapter must be one of {_ADAPTERS}, found '{adapter}'")
    unique_of = _unique_of_step(n, num_unique, tying)
    teacher = list(layers)
    _check_same_structure(teacher)

    uniques = []
    for j in range(num_unique):
        stands_for = [m[i] for i in range(n) if unique_of[i] == j]
        if init == "stepwise":
            source = [j * L // num_unique]
        else:
            source = stands_for
        shared = copy.deepcopy(teacher[source[0]])
        if not skip_init:
            if init == "random":
                _reset(shared)
            elif len(source) > 1:
                shared.load_state_dict(_average_layer([teacher[k] for k in source]))
        uniques.append(shared)

    att_path = fam.attention_path(teacher[0])
    steps = []
    for i in range(n):
        shared = uniques[unique_of[i]]
        paths, adapters, keys, lora = [], None, [], None
        if adapter == "bottleneck":
            paths = [att_path, *_ffn_input_paths(shared, sites)]
            d = _hidden_size(shared, sites)
            adapters = nn.ModuleList(BottleneckAdapter(d, adapter_dim, norm=adapter_norm) for _ in paths)
        elif adapter == "lora":
            keys = _weight_keys(shared, att_path, sites)
            deltas = []
            for key in keys:
                w_shared = _param(shared, key)
                if skip_init:
                    deltas.append(LowRankDelta(*w_shared.shape, lora_rank, lora_scale))
                else:
                    target = _param(teacher[m[i]], key).detach() - w_shared.detach()
                    deltas.append(LowRankDelta.from_matrix(target, lora_rank, lora_scale))
            lora = nn.ModuleList(deltas)
        steps.append(RecursiveStep(shared, paths, adapters, keys, lora, index=i))
    _replace_module(student, layers, nn.ModuleList(steps))
    return {"layer_map": m, "unique_of_step": unique_of, "teacher_layers": L}


# --------------------------------------------------------------------------- residual
def _to_residual(
    student: nn.Module,
    fam,
    sites: SharingSites,
    group_size: int = 3,
    rank: int = 16,
    diagonal: bool = True,
    extra_sites: Sequence[str] = (),
    skip_init: bool = False,
) -> Dict[str, object]:
    layers = list(fam.layers(student))
    L = len(layers)
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, found {group_size}")
    att_path = fam.attention_path(layers[0])
    groups = [list(range(g, min(g + group_size, L))) for g in range(0, L, group_size)]
    shared_keys: List[str] = []
    for group in groups:
        keys = _weight_keys(layers[group[0]], att_path, sites, tuple(extra_sites))
        for key in keys:
            weights = [_param(layers[l], key) for l in group]
            if any(w is weights[0] for w in weights[1:]):
                continue  # already one tensor across layers (e.g. Linformer share="layer")
            if any(w.shape != weights[0].shape for w in weights):
                raise ValueError(
                    f"to_shared(residual): weight '{key}' has shapes "
                    f"{[tuple(w.shape) for w in weights]} across layers {group}; expected one shape"
                )
            mean = torch.stack([w.detach().float() for w in weights]).mean(0).to(weights[0].dtype)
            shape = tuple(weights[0].shape)
            shared = SharedWeight(mean.reshape(shape[0], shape[1]))
            for l in group:
                owner, name = _owner_and_name(layers[l], key)
                param = ResidualWeight(shared, rank, diagonal, weight_shape=shape)
                param.skip_init = skip_init
                parametrize.register_parametrization(owner, name, param)
                param.skip_init = False
            if key not in shared_keys:
                shared_keys.append(key)
    return {"groups": groups, "weights": shared_keys, "teacher_layers": L}


#: scheme name -> builder ``(student, family, sites, **options) -> record``
SCHEMES: Dict[str, Callable[..., Dict[str, object]]] = {
    "recursive": _to_recursive,
    "residual": _to_residual,
}


def to_shared(
    model: nn.Module, scheme: str = "recursive", family: Optional[str] = None, **options
) -> nn.Module:
    """A parameter-sharing student built from ``model`` (left untouched).

    Arguments
    ---------
    model : nn.Module
        A teacher of a family in ``convert.families.FAMILIES`` (base model or any
        head), possibly already converted by ``to_linear_time``.
    scheme : str
        ``"recursive"`` or ``"residual"`` (``SCHEMES``).
    family : str, optional
        Force a family entry.
    **options
        recursive: ``num_unique=1``, ``num_steps=None`` (all layers),
        ``tying="cycle"|"block"``, ``init="average"|"stepwise"|"random"``,
        ``adapter="bottleneck"|"lora"|"none"``, ``adapter_dim=48``,
        ``adapter_norm=True``, ``lora_rank=8``, ``lora_scale=1.0``.
        residual: ``group_size=3``, ``rank=16``, ``diagonal=True``,
        ``extra_sites=()`` (more dotted paths inside a layer whose matrix
        weights are shared too, e.g. ``("convolution_module",)`` for the
        pointwise convolutions of a conformer layer).

    Returns
    -------
    nn.Module
        The student, with ``student.cald_sharing`` = ``{"scheme", "family",
        "options", ...}`` (recursive: ``layer_map`` step -> teacher layer).

    Example
    -------
    >>> from transformers import BertConfig, BertModel
    >>> cfg = BertConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
    ...                  intermediate_size=32, vocab_size=30)
    >>> teacher = BertModel(cfg)
    >>> student = to_shared(teacher, "recursive", num_unique=1, num_steps=2, adapter_dim=4)
    >>> student.cald_sharing["layer_map"]
    [1, 3]
    >>> unique_parameter_count(student) < unique_parameter_count(teacher)
    True
    """
    if scheme not in SCHEMES:
        raise ValueError(f"to_shared: unknown scheme '{scheme}', expected one of {sorted(SCHEMES)}")
    if getattr(model, "cald_sharing", None) is not None:
        raise ValueError(
            "to_shared: model is already a parameter-sharing student (model.cald_sharing is set)"
        )
    fam, sites = _family_and_sites(model, family)
    student = copy.deepcopy(model)
    public = {k: v for k, v in options.items() if k != "skip_init"}
    record = SCHEMES[scheme](student, fam, sites, **options)
    student.cald_sharing = {"scheme": scheme, "family": fam.name, "options": public, **record}
    return student


def apply_sharing_record(model: nn.Module, record: Dict[str, object]) -> nn.Module:
    """Rebuild a student's structure from its ``cald_sharing`` record, without init work.

    Use before loading saved student weights into a freshly built teacher
    architecture (SVDs and averages are skipped: the weights come next).

    Arguments
    ---------
    model : nn.Module
        The teacher architecture (random or pretrained weights).
    record : dict
        ``student.cald_sharing`` (or its JSON round trip).

    Returns
    -------
    nn.Module
        A student with the same parameter names and shapes.
    """
    return to_shared(
        model, record["scheme"], family=record.get("family"), skip_init=True, **dict(record["options"])
    )


# --------------------------------------------------------------------------- training switches
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


# --------------------------------------------------------------------------- size honesty
def _tensor_key(t: torch.Tensor) -> Tuple:
    storage = t.untyped_storage().data_ptr()
    return (t.device.type, storage, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


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


# --------------------------------------------------------------------------- student directories
SHARING_FILE = "cald_sharing.json"
SHARED_WEIGHTS_FILE = "model.safetensors"


def save_shared_student(
    model: nn.Module, directory: os.PathLike, hparams: Optional[Dict[str, object]] = None
) -> Path:
    """Save a parameter-sharing student so :func:`load_shared_student` rebuilds it.

    Layout: the teacher architecture (transformers ``config.json`` or SpeechBrain
    ``hparams.json``, as ``convert.io`` writes them), ``cald_sharing.json`` (the
    sharing record, the teacher class and, for a linear-time student, its
    ``cald_conversion``) and ``model.safetensors`` holding each shared tensor once.

    Arguments
    ---------
    model : nn.Module
        A student from :func:`to_shared`.
    directory : path-like
        Created if missing.
    hparams : dict, optional
        SpeechBrain models only: constructor keyword arguments, unless the
        teacher came from ``convert.load_teacher`` (which records them).

    Returns
    -------
    pathlib.Path
        The directory.
    """
    from speechbrain_cald.convert import io as convert_io
    from speechbrain_cald.convert.families import FAMILIES

    record = getattr(model, "cald_sharing", None)
    if record is None:
        raise ValueError(
            f"{type(model).__name__} has no cald_sharing record: save_shared_student expects a "
            "student made by speechbrain_cald.convert.share.to_shared"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    family = FAMILIES[record["family"]]
    if family.save_format == "hf":
        model.config.save_pretrained(directory)
    else:
        hparams = hparams if hparams is not None else getattr(model, "cald_hparams", None)
        if hparams is None:
            raise ValueError(
                f"save_shared_student: a SpeechBrain {type(model).__name__} needs its constructor "
                "hparams (pass hparams={...}, or load the teacher with convert.load_teacher)"
            )
        if "class" not in hparams or "kwargs" not in hparams:
            hparams = {"class": f"{type(model).__module__}.{type(model).__qualname__}", "kwargs": hparams}
        convert_io._write_json(directory / convert_io.HPARAMS_FILE, convert_io._encode(hparams))
    meta = {
        "sharing": record,
        "teacher_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "conversion": getattr(model, "cald_conversion", None),
    }
    convert_io._write_json(directory / SHARING_FILE, meta)  # atomic, like the other student files
    save_shared_weights(model, directory / SHARED_WEIGHTS_FILE)
    return directory


def load_shared_student(directory: os.PathLike) -> nn.Module:
    """Rebuild a student written by :func:`save_shared_student` (no teacher weights needed).

    Arguments
    ---------
    directory : path-like
        Local directory with ``cald_sharing.json``.

    Returns
    -------
    nn.Module
        The student in eval mode, with ``cald_sharing`` (and ``cald_conversion``).
    """
    from speechbrain_cald.convert import class_names
    from speechbrain_cald.convert import io as convert_io
    from speechbrain_cald.convert.linear_time import convert_in_place
    from speechbrain_cald.pretrained import local_source

    directory = local_source(directory, "student")
    path = directory / SHARING_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: expected a student directory written by "
            "speechbrain_cald.convert.share.save_shared_student"
        )
    meta = json.loads(path.read_text())
    if (directory / "config.json").is_file():
        import transformers

        config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
        model = class_names.model_class(meta.get("teacher_class"), f"{path}: key 'teacher_class'")(config)
        hparams = None
    else:
        hparams = json.loads((directory / convert_io.HPARAMS_FILE).read_text())
        model = convert_io.build_speechbrain_model(hparams, directory / convert_io.HPARAMS_FILE)
    conversion = meta.get("conversion")
    if conversion:
        mixer = class_names.recorded_mixer(conversion.get("mixer"), f"{path}: key 'conversion.mixer'")
        convert_in_place(
            model, mixer, "default", conversion["family"], conversion["teacher_class"],
            **conversion["mixer_options"],
        )
    student = apply_sharing_record(model, meta["sharing"])
    load_shared_weights(student, directory / SHARED_WEIGHTS_FILE)
    if hparams is not None:
        student.cald_hparams = convert_io._decode(hparams, directory / convert_io.HPARAMS_FILE)
    return student.eval()


# --------------------------------------------------------------------------- command line
def _format_size(name: str, report: Dict[str, int]) -> str:
    return (
        f"{name:<8} unique params {report['unique_parameters']:>12,d}   "
        f"on disk {report['disk_bytes'] / 2**20:9.2f} MiB"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m speechbrain_cald.convert.share TEACHER_DIR STUDENT_DIR --scheme residual ...``.

    Loads a teacher from a local directory (``convert.load_teacher``: transformers
    or SpeechBrain), builds the student, prints unique parameters and on-disk
    size before and after, and writes the student with :func:`save_shared_student`.

    Arguments
    ---------
    argv : sequence of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    from speechbrain_cald.convert.io import load_teacher

    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_cald.convert.share", description=main.__doc__.split("\n")[0]
    )
    parser.add_argument("teacher_dir")
    parser.add_argument("student_dir", nargs="?", default=None)
    parser.add_argument("--scheme", choices=sorted(SCHEMES), default="residual")
    parser.add_argument("--family", default=None)
    parser.add_argument("--group-size", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--no-diagonal", action="store_true")
    parser.add_argument(
        "--extra-sites", nargs="*", default=[], help="residual: more modules to share (convolution_module)"
    )
    parser.add_argument("--num-unique", type=int, default=1)
    parser.add_argument("--num-steps", type=int, default=None)
    parser.add_argument("--tying", choices=["cycle", "block"], default="cycle")
    parser.add_argument("--init", choices=list(_SHARED_INITS), default="average")
    parser.add_argument("--adapter", choices=list(_ADAPTERS), default="bottleneck")
    parser.add_argument("--adapter-dim", type=int, default=48)
    parser.add_argument("--lora-rank", type=int, default=8)
    args = parser.parse_args(argv)

    teacher = load_teacher(args.teacher_dir)
    if args.scheme == "residual":
        options = {
            "group_size": args.group_size,
            "rank": args.rank,
            "diagonal": not args.no_diagonal,
            "extra_sites": list(args.extra_sites),
        }
    else:
        options = {
            "num_unique": args.num_unique,
            "num_steps": args.num_steps,
            "tying": args.tying,
            "init": args.init,
            "adapter": args.adapter,
            "adapter_dim": args.adapter_dim,
            "lora_rank": args.lora_rank,
        }
    student = to_shared(teacher, args.scheme, family=args.family, **options)
    before, after = size_report(teacher), size_report(student)
    enc_before, enc_after = encoder_parameter_count(teacher), encoder_parameter_count(student)
    print(f"scheme {args.scheme} ({student.cald_sharing['family']}): {json.dumps(options)}")
    print(_format_size("teacher", before) + f"   encoder layers {enc_before:>12,d}")
    print(_format_size("student", after) + f"   encoder layers {enc_after:>12,d}")
    print(
        "student / teacher unique parameters: "
        f"{after['unique_parameters'] / before['unique_parameters']:.3f} "
        f"(encoder layers {enc_after / enc_before:.3f})"
    )
    if args.student_dir:
        out = save_shared_student(student, args.student_dir)
        size = (out / SHARED_WEIGHTS_FILE).stat().st_size
        print(f"wrote {out} ({SHARED_WEIGHTS_FILE} {size / 2**20:.2f} MiB, each shared tensor once)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
