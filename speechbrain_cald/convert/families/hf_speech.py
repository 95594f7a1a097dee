"""transformers speech encoders: wav2vec2, HuBERT, WavLM, Wav2Vec2-Conformer, Whisper.

How each passes padding to attention (transformers 5.x, read from its source):

- wav2vec2 / HuBERT / Wav2Vec2-Conformer: the model turns the sample-level
  ``attention_mask`` into a frame mask (``_get_feature_vector_attention_mask``),
  zeroes padded frames, then ``create_bidirectional_mask`` builds what the
  attention gets: ``None`` (SDPA, no padding), a 4D boolean mask (SDPA), a 4D
  additive mask (eager) or the 2D mask (flash attention).
- WavLM: the raw 2D frame mask (1 on valid) goes to every layer; attention
  returns ``(out, weights, position_bias)``.
- Whisper encoder: no mask at all (inputs are padded to 30 s by design), so the
  mixer sees ``lengths=None``; the decoder keeps its self- and cross-attention.
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch
from torch import nn

from speechbrain_cald.convert.families.base import Family
from speechbrain_cald.convert.families.projections import named_linears
from speechbrain_cald.convert.padding_exact import (
    install_conv_padding_hooks,
    install_feature_encoder_padding_hooks,
)
from speechbrain_cald.convert.wrappers import HFAttentionWrapper, WavLMAttentionWrapper

__all__ = ["WAV2VEC2", "HUBERT", "WAVLM", "WAV2VEC2_CONFORMER", "WHISPER"]


def feature_encoder_lengths(model: nn.Module, input_lengths: torch.Tensor) -> torch.Tensor:
    """Frames after the CNN feature encoder for ``input_lengths (B,)`` samples.

    Uses the model's own ``_get_feat_extract_output_lengths`` without the
    adapter (the adapter runs after the encoder layers).
    """
    fn = model._get_feat_extract_output_lengths
    if "add_adapter" in inspect.signature(fn).parameters:
        return fn(input_lengths, add_adapter=False).long()
    return fn(input_lengths).long()


def _embed_heads(attention: nn.Module):
    return attention.embed_dim, attention.num_heads


def _conformer_dims(attention: nn.Module):
    return attention.linear_q.in_features, attention.num_heads


def _whisper_lengths(model: nn.Module, input_lengths: torch.Tensor) -> torch.Tensor:
    # conv1 (k3, p1, s1) then conv2 (k3, p1, s2)
    return (input_lengths - 1) // 2 + 1


def _whisper_max_positions(model: nn.Module) -> Optional[int]:
    return int(model.config.max_source_positions)


def _exact_feature_padding(student: nn.Module) -> None:
    # GroupNorm feature encoders (wav2vec2-base style) take statistics over padding
    install_feature_encoder_padding_hooks(student)


def _exact_conformer_padding(student: nn.Module) -> None:
    # the conformer conv module sees padded frames; make it blind to them
    install_conv_padding_hooks(WAV2VEC2_CONFORMER.layers(student))
    install_feature_encoder_padding_hooks(student)


_QKVO = named_linears(("q_proj", "k_proj", "v_proj", "out_proj"))

WAV2VEC2 = Family(
    name="wav2vec2",
    description="transformers Wav2Vec2 (Model, ForCTC, ForSequenceClassification, ...): "
    "encoder.layers[i].attention; mask None / 4D bool / 4D additive / 2D",
    encoder_classes=("Wav2Vec2Encoder", "Wav2Vec2EncoderStableLayerNorm"),
    layers_attr="layers",
    attention_paths=("attention",),
    wrapper=HFAttentionWrapper,
    projections=_QKVO,
    dims=_embed_heads,
    frame_lengths_fn=feature_encoder_lengths,
    post_convert=_exact_feature_padding,
)

HUBERT = Family(
    name="hubert",
    description="transformers HuBERT (Model, ForCTC, ForSequenceClassification): "
    "encoder.layers[i].attention; same masks as wav2vec2",
    encoder_classes=("HubertEncoder", "HubertEncoderStableLayerNorm"),
    layers_attr="layers",
    attention_paths=("attention",),
    wrapper=HFAttentionWrapper,
    projections=_QKVO,
    dims=_embed_heads,
    frame_lengths_fn=feature_encoder_lengths,
    post_convert=_exact_feature_padding,
)

WAVLM = Family(
    name="wavlm",
    description="transformers WavLM (Model, ForCTC, ForSequenceClassification): "
    "encoder.layers[i].attention; 2D frame mask, returns (out, weights, position_bias)",
    encoder_classes=("WavLMEncoder", "WavLMEncoderStableLayerNorm"),
    layers_attr="layers",
    attention_paths=("attention",),
    wrapper=WavLMAttentionWrapper,
    projections=_QKVO,
    dims=_embed_heads,
    frame_lengths_fn=feature_encoder_lengths,
    post_convert=_exact_feature_padding,
)

WAV2VEC2_CONFORMER = Family(
    name="wav2vec2_conformer",
    description="transformers Wav2Vec2-Conformer (Model, ForCTC, ForSequenceClassification): "
    "encoder.layers[i].self_attn; masks as wav2vec2, rotary / relative positions dropped; "
    "conv modules made blind to padding (convert/padding_exact.py)",
    encoder_classes=("Wav2Vec2ConformerEncoder",),
    layers_attr="layers",
    attention_paths=("self_attn",),
    wrapper=HFAttentionWrapper,
    projections=named_linears(("linear_q", "linear_k", "linear_v", "linear_out")),
    dims=_conformer_dims,
    frame_lengths_fn=feature_encoder_lengths,
    post_convert=_exact_conformer_padding,
)

WHISPER = Family(
    name="whisper",
    description="transformers Whisper (Model, ForConditionalGeneration, ForAudioClassification, "
    "WhisperEncoder): encoder.layers[i].self_attn only; no padding mask (lengths=None)",
    encoder_classes=("WhisperEncoder",),
    layers_attr="layers",
    attention_paths=("self_attn",),
    wrapper=HFAttentionWrapper,
    projections=_QKVO,
    dims=_embed_heads,
    frame_lengths_fn=_whisper_lengths,
    max_positions_fn=_whisper_max_positions,
)
