"""Make convolutions blind to padding (hooks only, no new parameters).

Two places where a teacher's output on valid frames depends on its padding:

1. Conformer convolution modules (below).
2. The wav2vec2-family feature encoder with ``feat_extract_norm="group"``
   (wav2vec2-base, HuBERT-base, ...): its first conv layer's GroupNorm takes
   statistics over every frame, padding included. The converter stashes the
   valid sample counts when the base model is called with ``attention_mask``
   and recomputes that GroupNorm with statistics over each sequence's valid
   frames only (what the sequence alone gives); without a mask nothing changes.

Both transformers' Wav2Vec2-Conformer and SpeechBrain's Conformer run their
depthwise time convolution over padded frames that are not zero (the conv
module's LayerNorm and pointwise conv turn zero frames into non-zero ones, and
SpeechBrain masks only the conv output), so the last valid frames of a padded
sequence differ from the same sequence run alone — in the teacher as much as in
a student. A student is meant to be exactly batch-invariant, so for these
families the converter adds two forward pre-hooks per layer:

- on the layer: read the padding mask from the layer's call and stash the valid
  lengths on its depthwise conv (a plain attribute, not a buffer);
- on the depthwise conv: zero the padded frames of its input ``(B, C, T)``,
  which is what the conv's own zero padding gives a sequence run alone.

Full-length batches are unchanged (outputs equal the teacher's code path), and
the state_dict is untouched. The hooks are module-level functions, so deep
copies and pickles of a student keep working.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from speechbrain_cald.convert.families.base import get_path
from speechbrain_cald.convert.masks import lengths_from_attention_mask, lengths_from_valid

__all__ = [
    "install_conv_padding_hooks",
    "install_feature_encoder_padding_hooks",
    "masked_group_norm",
    "zero_padded_conv_input",
]

_STASH = "_cald_valid_lengths"


def zero_padded_conv_input(conv: nn.Module, args):
    """Forward pre-hook on a ``Conv1d``: zero input frames beyond the stashed lengths.

    Example
    -------
    >>> conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)
    >>> _ = conv.register_forward_pre_hook(zero_padded_conv_input)
    >>> x = torch.ones(1, 1, 4)
    >>> setattr(conv, _STASH, torch.tensor([2]))
    >>> torch.equal(conv(x)[..., :2], conv(x[..., :2]))
    True
    """
    lengths: Optional[torch.Tensor] = conv.__dict__.pop(_STASH, None)
    if lengths is None:
        return None
    x = args[0]
    valid = torch.arange(x.shape[-1], device=x.device) < lengths.to(x.device)[:, None]
    return (x * valid[:, None, :].to(x.dtype),) + tuple(args[1:])


def _hf_conformer_layer_hook(layer: nn.Module, args, kwargs):
    hidden = args[0] if args else kwargs["hidden_states"]
    lengths = lengths_from_attention_mask(kwargs.get("attention_mask"), hidden.shape[1])
    layer.conv_module.depthwise_conv.__dict__[_STASH] = lengths


def _sb_conformer_layer_hook(layer: nn.Module, args, kwargs):
    padding = kwargs.get("src_key_padding_mask", args[2] if len(args) > 2 else None)
    lengths = None if padding is None else lengths_from_valid(~padding.bool(), "src_key_padding_mask")
    layer.convolution_module.conv.__dict__[_STASH] = lengths


# layer class name -> (layer pre-hook, path of the depthwise conv inside the layer)
_CONV_SITES = {
    "Wav2Vec2ConformerEncoderLayer": (_hf_conformer_layer_hook, "conv_module.depthwise_conv"),
    "ConformerEncoderLayer": (_sb_conformer_layer_hook, "convolution_module.conv"),
}


def install_conv_padding_hooks(layers) -> int:
    """Install the hooks on every Conformer layer in ``layers``; returns how many.

    Layers of other classes are left alone, so this is safe on any encoder.
    """
    count = 0
    for layer in layers:
        site = _CONV_SITES.get(type(layer).__name__)
        if site is None:
            continue
        layer_hook, conv_path = site
        layer.register_forward_pre_hook(layer_hook, with_kwargs=True)
        get_path(layer, conv_path).register_forward_pre_hook(zero_padded_conv_input)
        count += 1
    return count


# ------------------------------------------------------------ feature encoder
_BASE_MODELS = ("Wav2Vec2Model", "HubertModel", "WavLMModel", "Wav2Vec2ConformerModel")


def masked_group_norm(norm: nn.GroupNorm, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` for ``x (B, C, T)`` with statistics over the first ``lengths[b]`` frames.

    Example
    -------
    >>> norm = nn.GroupNorm(2, 4)
    >>> x = torch.randn(2, 4, 6)
    >>> y = masked_group_norm(norm, x, torch.tensor([6, 4]))
    >>> tol = 64 * torch.finfo(y.dtype).eps * y.abs().max()  # rounding: other shapes, other sums
    >>> bool((y[0] - norm(x[:1])[0]).abs().max() <= tol), bool((y[1, :, :4] - norm(x[1:, :, :4])[0]).abs().max() <= tol)
    (True, True)
    """
    B, C, T = x.shape
    G = norm.num_groups
    valid = (torch.arange(T, device=x.device) < lengths.to(x.device)[:, None]).to(x.dtype)  # (B, T)
    xg = x.reshape(B, G, C // G, T)
    weight = valid[:, None, None, :]
    count = (weight.sum(-1, keepdim=True) * (C // G)).sum(-2, keepdim=True).clamp_min(1)
    mean = (xg * weight).sum((-1, -2), keepdim=True) / count
    var = (((xg - mean) ** 2) * weight).sum((-1, -2), keepdim=True) / count
    y = ((xg - mean) / torch.sqrt(var + norm.eps)).reshape(B, C, T)
    if norm.affine:
        y = y * norm.weight[None, :, None] + norm.bias[None, :, None]
    return y


def _group_norm_hook(norm: nn.Module, inputs, output):
    lengths = norm.__dict__.pop(_STASH, None)
    if lengths is None:
        return None
    return masked_group_norm(norm, inputs[0], lengths)


def _base_model_hook(base: nn.Module, args, kwargs):
    layer0 = base.feature_extractor.conv_layers[0]
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    lengths = None
    if mask is not None:
        samples = mask.sum(-1).long()
        conv = layer0.conv
        lengths = torch.div(samples - conv.kernel_size[0], conv.stride[0], rounding_mode="floor") + 1
    layer0.layer_norm.__dict__[_STASH] = lengths


def install_feature_encoder_padding_hooks(model: nn.Module) -> int:
    """Masked GroupNorm statistics for every wav2vec2-family base model inside ``model``
    whose feature encoder uses ``feat_extract_norm="group"``; returns how many."""
    count = 0
    for module in model.modules():
        if type(module).__name__ not in _BASE_MODELS:
            continue
        layers = getattr(getattr(module, "feature_extractor", None), "conv_layers", None)
        if layers is None or not isinstance(getattr(layers[0], "layer_norm", None), nn.GroupNorm):
            continue
        module.register_forward_pre_hook(_base_model_hook, with_kwargs=True)
        layers[0].layer_norm.register_forward_hook(_group_norm_hook)
        count += 1
    return count
