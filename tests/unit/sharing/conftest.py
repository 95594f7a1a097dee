"""Tiny teachers of several families for the parameter-sharing tests."""

import pytest
import torch


def tiny_bert(layers=4):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=32, vocab_size=30, max_position_embeddings=32)
    return BertModel(cfg).eval()


def tiny_wav2vec2(layers=4):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                         intermediate_size=32, conv_dim=(8, 8), conv_kernel=(3, 3),
                         conv_stride=(2, 2), num_conv_pos_embeddings=4,
                         num_conv_pos_embedding_groups=2)
    return Wav2Vec2Model(cfg).eval()


SB_HPARAMS = dict(tgt_vocab=10, input_size=16, d_model=16, nhead=2, num_encoder_layers=4,
                  num_decoder_layers=0, d_ffn=32, dropout=0.0, normalize_before=True, causal=False)


def tiny_speechbrain(encoder="conformer"):
    from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR

    torch.manual_seed(0)
    att = "RelPosMHAXL" if encoder == "conformer" else "regularMHA"
    hp = dict(SB_HPARAMS, encoder_module=encoder, attention_type=att)
    model = TransformerASR(**hp).eval()
    model.cald_hparams = hp
    return model


def _bert_call(model):
    ids = torch.tensor([[1, 5, 7, 9, 3, 2], [4, 8, 2, 6, 0, 0]])
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    return model(input_ids=ids, attention_mask=mask).last_hidden_state


def _w2v_call(model):
    g = torch.Generator().manual_seed(1)
    wav = torch.randn(2, 120, generator=g)
    mask = torch.ones(2, 120, dtype=torch.long)
    mask[1, 80:] = 0
    return model(wav, attention_mask=mask).last_hidden_state


def _sb_call(model):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 16, generator=g)
    return model.encode(x, torch.tensor([1.0, 5 / 7]))


#: name -> (builder, forward returning the encoder output (B, T, D))
TEACHERS = {
    "bert": (tiny_bert, _bert_call),
    "wav2vec2": (tiny_wav2vec2, _w2v_call),
    "sb_conformer": (lambda: tiny_speechbrain("conformer"), _sb_call),
    "sb_transformer": (lambda: tiny_speechbrain("transformer"), _sb_call),
}


@pytest.fixture(params=sorted(TEACHERS))
def teacher_case(request):
    build, call = TEACHERS[request.param]
    return request.param, build(), call


@pytest.fixture
def teachers():
    """``name -> (build, call)`` for tests that pick their teachers."""
    return TEACHERS
