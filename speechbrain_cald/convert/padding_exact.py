"""Make Conformer convolution modules blind to padding (hooks only, no new parameters).

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

__all__ = ["install_conv_padding_hooks", "zero_padded_conv_input"]

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
