"""Where attention and FFN sit in each family's layer (``SHARING_SITES``), and the layer-
walking helpers the sharing transforms use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["SHARING_SITES", "SharingSites"]


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
