"""SpeechBrain ``TransformerASR`` encoders (``encoder_module="transformer"`` or ``"conformer"``).

The encoder layers call their attention as
``self_att(x, x, x, attn_mask=src_mask, key_padding_mask=src_key_padding_mask, pos_embs=...)``
(``TransformerEncoderLayer.self_att``) or the same through
``ConformerEncoderLayer.mha_layer``; ``src_key_padding_mask (B, T)`` is True on
padded frames (built from relative ``wav_len``) and ``src_mask`` is the causal
mask when ``causal=True``. The decoder keeps its attention. The CNN front-end of
a SpeechBrain ASR recipe lives outside ``TransformerASR``, so frame lengths at
the layers equal the lengths of ``src``.
"""

from __future__ import annotations

from typing import Dict, Optional

from torch import nn

from speechbrain_cald.convert.families.base import Family, Projection
from speechbrain_cald.convert.families.projections import split_head_interleaved, split_stacked
from speechbrain_cald.convert.padding_exact import install_conv_padding_hooks
from speechbrain_cald.nnet.dropin import SpeechBrainAttention

__all__ = ["SPEECHBRAIN_TRANSFORMER_ASR"]


def _unsupported(attention: nn.Module) -> ValueError:
    return ValueError(
        f"speechbrain_transformer_asr: encoder attention of class {type(attention).__name__} is "
        "not supported (expected MultiheadAttention, RelPosMHAXL or RoPEMHA; "
        "HyperMixing is already linear-time)"
    )


def _dims(attention: nn.Module):
    inner = getattr(attention, "att", None)  # speechbrain MultiheadAttention wraps nn.MultiheadAttention
    if isinstance(inner, nn.MultiheadAttention):
        return inner.embed_dim, inner.num_heads
    if hasattr(attention, "in_proj_weight") or hasattr(attention, "qk_proj_weight"):
        return attention.embed_dim, attention.num_heads
    raise _unsupported(attention)


def _projections(attention: nn.Module) -> Dict[str, Projection]:
    inner = getattr(attention, "att", None)
    if isinstance(inner, nn.MultiheadAttention):
        if inner._qkv_same_embed_dim:
            q, k, v = split_stacked(inner.in_proj_weight, inner.in_proj_bias)
        else:
            bq, bk, bv = (
                inner.in_proj_bias.chunk(3) if inner.in_proj_bias is not None else (None,) * 3
            )
            q = Projection(inner.q_proj_weight, bq)
            k = Projection(inner.k_proj_weight, bk)
            v = Projection(inner.v_proj_weight, bv)
        return {"q": q, "k": k, "v": v, "o": Projection(inner.out_proj.weight, inner.out_proj.bias)}
    if getattr(attention, "_qkv_same_embed_dim", False) and hasattr(attention, "in_proj_weight"):
        # RelPosMHAXL / RoPEMHA self-attention path: per-head [q_h, k_h, v_h] rows
        q, k, v = split_head_interleaved(attention.in_proj_weight, None, attention.num_heads)
        if getattr(attention, "vbias", None) is not None:
            v = Projection(v.weight, attention.value_bias_weight)
        out = attention.out_proj
        return {"q": q, "k": k, "v": v, "o": Projection(out.weight, out.bias)}
    raise _unsupported(attention)


def _speechbrain_wrapper(mixer: nn.Module) -> nn.Module:
    # src_mask is the causal (or chunked streaming) mask; causality is the mixer's
    # own, and to_linear_time warns when a causal teacher gets a bidirectional mixer
    return SpeechBrainAttention(mixer, ignore_attn_mask=True)


def _max_positions(model: nn.Module) -> Optional[int]:
    for name in ("positional_encoding", "positional_encoding_decoder"):
        max_len = getattr(getattr(model, name, None), "max_len", None)
        if max_len is not None:
            return int(max_len)
    return None


def _exact_conformer_padding(student: nn.Module) -> None:
    # Conformer conv modules mask only their output; make them blind to padding
    install_conv_padding_hooks(SPEECHBRAIN_TRANSFORMER_ASR.layers(student))


def _is_causal(model: nn.Module) -> bool:
    return bool(getattr(model, "causal", False))


SPEECHBRAIN_TRANSFORMER_ASR = Family(
    name="speechbrain_transformer_asr",
    description="SpeechBrain TransformerASR, encoder_module 'transformer' (encoder.layers[i].self_att) "
    "or 'conformer' (encoder.layers[i].mha_layer); key_padding_mask (B, T) True on padding; "
    "conformer conv modules made blind to padding (convert/padding_exact.py)",
    encoder_classes=("TransformerASR",),
    layers_attr="encoder.layers",
    attention_paths=("self_att", "mha_layer"),
    wrapper=_speechbrain_wrapper,
    projections=_projections,
    dims=_dims,
    max_positions_fn=_max_positions,
    is_causal_fn=_is_causal,
    post_convert=_exact_conformer_padding,
    save_format="speechbrain",
    model_classes=("speechbrain.lobes.models.transformer.TransformerASR.TransformerASR",),
)
