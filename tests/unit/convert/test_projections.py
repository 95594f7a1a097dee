"""Each family's ``projections(attention)`` reproduces that attention: plain multi-head
attention built from the extracted q / k / v / o equals the module's own output."""

from __future__ import annotations

import math

import torch

from speechbrain_cald.convert import FAMILIES
from float_tolerance import LAYER, NETWORK, REDUCTION, assert_close

D, H = 16, 2


def reference_mha(x, proj, num_heads, with_out=True, scale=None):
    """softmax(q k^T * scale) v (scale 1 / sqrt(d_head) by default), then the output
    projection if there is one."""
    B, T, _ = x.shape

    def lin(p):
        y = x @ p.weight.T
        return y + p.bias if p.bias is not None else y

    def heads(t):
        return t.view(B, T, num_heads, -1).transpose(1, 2)

    q, k, v = heads(lin(proj["q"])), heads(lin(proj["k"])), heads(lin(proj["v"]))
    scale = scale if scale is not None else 1 / math.sqrt(q.shape[-1])
    att = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, -1)
    if with_out:
        y = y @ proj["o"].weight.T + (proj["o"].bias if proj["o"].bias is not None else 0)
    return y


def _x():
    return torch.randn(2, 5, D)


def test_wav2vec2_family_projections():
    from transformers import Wav2Vec2Config
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2Attention

    config = Wav2Vec2Config(hidden_size=D, num_attention_heads=H)
    config._attn_implementation = "eager"
    att = Wav2Vec2Attention(D, H, config=config).eval()
    x = _x()
    with torch.no_grad():
        assert_close(att(x)[0], reference_mha(x, FAMILIES["wav2vec2"].projections(att), H), factor=LAYER)
    assert FAMILIES["wav2vec2"].attention_dims(att) == (D, H)


def test_whisper_projections_key_has_no_bias():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperAttention

    config = WhisperConfig(d_model=D, encoder_attention_heads=H)
    config._attn_implementation = "eager"
    att = WhisperAttention(D, H, config=config).eval()
    proj = FAMILIES["whisper"].projections(att)
    assert proj["k"].bias is None
    x = _x()
    with torch.no_grad():
        assert_close(att(x)[0], reference_mha(x, proj, H), factor=LAYER)


def test_conformer_projections():
    from transformers import Wav2Vec2ConformerConfig
    from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import (
        Wav2Vec2ConformerSelfAttention,
    )

    config = Wav2Vec2ConformerConfig(hidden_size=D, num_attention_heads=H, position_embeddings_type=None)
    config._attn_implementation = "eager"
    att = Wav2Vec2ConformerSelfAttention(config).eval()
    x = _x()
    with torch.no_grad():
        assert_close(att(x)[0], reference_mha(x, FAMILIES["wav2vec2_conformer"].projections(att), H), factor=LAYER)


def test_bert_projections_have_no_output():
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertSelfAttention

    config = BertConfig(hidden_size=D, num_attention_heads=H)
    config._attn_implementation = "eager"
    att = BertSelfAttention(config).eval()
    proj = FAMILIES["bert"].projections(att)
    assert "o" not in proj  # BertSelfOutput.dense stays in the layer
    x = _x()
    with torch.no_grad():
        assert_close(att(x)[0], reference_mha(x, proj, H, with_out=False), factor=LAYER)


def test_gpt_neox_fused_qkv_split_matches_the_models_own_split():
    from transformers import GPTNeoXConfig
    from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXAttention

    att = GPTNeoXAttention(GPTNeoXConfig(hidden_size=D, num_attention_heads=H), layer_idx=0)
    proj = FAMILIES["gpt_neox"].projections(att)
    x = _x()
    with torch.no_grad():
        # how GPTNeoXAttention.forward splits query_key_value
        qkv = att.query_key_value(x).view(2, 5, -1, 3 * (D // H)).transpose(1, 2)
        q, k, v = qkv.chunk(3, dim=-1)
        for name, ref in (("q", q), ("k", k), ("v", v)):
            ours = (x @ proj[name].weight.T + proj[name].bias).view(2, 5, H, -1).transpose(1, 2)
            assert_close(ours, ref, factor=REDUCTION)  # one linear, another batch shape
    assert proj["o"].weight is att.dense.weight


def test_speechbrain_multihead_attention_projections():
    from speechbrain.nnet.attention import MultiheadAttention

    att = MultiheadAttention(nhead=H, d_model=D).eval()
    x = _x()
    with torch.no_grad():
        out, _ = att(x, x, x)
        assert_close(out, reference_mha(x, FAMILIES["speechbrain_transformer_asr"].projections(att), H), factor=LAYER)


def test_speechbrain_relpos_projections_without_position_terms():
    """RelPosMHAXL with its positional terms zeroed is plain attention over our q / k / v / o."""
    from speechbrain.nnet.attention import RelPosEncXL, RelPosMHAXL

    att = RelPosMHAXL(D, H, dropout=0.0).eval()
    with torch.no_grad():
        att.linear_pos.weight.zero_()
        att.pos_bias_u.zero_()
        att.pos_bias_v.zero_()
        att.out_proj.bias.normal_()
        x = _x()
        out, _ = att(x, x, x, pos_embs=RelPosEncXL(D)(x))
        proj = FAMILIES["speechbrain_transformer_asr"].projections(att)
        # SpeechBrain's RelPosMHAXL scales scores by 1 / sqrt(embed_dim), not 1 / sqrt(head_dim)
        assert_close(out, reference_mha(x, proj, H, scale=1 / math.sqrt(D)), factor=NETWORK)  # relative positions: more terms
