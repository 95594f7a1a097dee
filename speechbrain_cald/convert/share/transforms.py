"""The two sharing transforms, teacher -> student: ``recursive`` (shared layers run as steps,
per-step adapters) and ``residual`` (per-group shared weight + low-rank + diagonal);
``to_shared`` picks one and ``apply_sharing_record`` rebuilds a saved student's structure.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from speechbrain_cald.convert.share.sites import (
    SharingSites,
    _ffn_input_paths,
    _family_and_sites,
    _get_path,
    _hidden_size,
    _owner_and_name,
    _param,
    _replace_module,
    _weight_keys,
)
from speechbrain_cald.nnet.sharing import BottleneckAdapter, LowRankDelta, ResidualWeight, SharedWeight

__all__ = ["SCHEMES", "RecursiveStep", "apply_sharing_record", "step_teacher_layers", "to_shared"]


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
    >>> from speechbrain_cald.convert.share.sizes import unique_parameter_count
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
