"""SpeechBrainAttention: a mixer inside real SpeechBrain encoder layers."""

import pytest
import torch
from speechbrain.lobes.models.transformer.Conformer import ConformerEncoderLayer
from speechbrain.lobes.models.transformer.Transformer import TransformerEncoderLayer

from speechbrain_cald.nnet.bimamba import BiMamba2
from speechbrain_cald.nnet.dropin import SpeechBrainAttention, lengths_from_key_padding_mask


class LengthSpy(torch.nn.Module):
    """A mixer that records what it was called with and returns its input, padding zeroed."""

    def forward(self, x, lengths):
        self.seen = (x, lengths)
        mask = torch.arange(x.shape[1]) < (x.shape[1] if lengths is None else lengths[:, None])
        return x * mask[..., None]


def pad_mask(lengths, T):
    return torch.arange(T)[None, :] >= lengths[:, None]


def bimamba():
    return BiMamba2(16, d_state=8, expand=1, headdim=4, chunk_size=4)


def test_lengths_from_key_padding_mask():
    lengths = torch.tensor([5, 2, 0])
    assert torch.equal(lengths_from_key_padding_mask(pad_mask(lengths, 5)), lengths)
    with pytest.raises(ValueError, match=r"right padding only.*rows \[0\]"):
        lengths_from_key_padding_mask(torch.tensor([[True, False], [False, True]]))


@pytest.mark.parametrize("layer_kind", ["conformer", "transformer"])
def test_mixer_inside_speechbrain_encoder_layer(layer_kind):
    if layer_kind == "conformer":
        layer = ConformerEncoderLayer(d_model=16, d_ffn=32, nhead=2, kernel_size=3, attention_type="regularMHA")
        slot = "mha_layer"
    else:
        layer = TransformerEncoderLayer(d_ffn=32, nhead=2, d_model=16)
        slot = "self_att"
    mixer = bimamba()
    setattr(layer, slot, SpeechBrainAttention(mixer))
    layer.eval()
    captured = {}
    getattr(layer, slot).register_forward_hook(
        lambda module, args, kwargs, out: captured.update(query=args[0], out=out), with_kwargs=True
    )
    lengths = torch.tensor([11, 6])
    x = torch.randn(2, 11, 16)
    out, weights = layer(x, src_key_padding_mask=pad_mask(lengths, 11))
    assert out.shape == x.shape and torch.isfinite(out).all() and weights is None
    # what the layer got back from its attention slot is the mixer on each sequence alone
    mixed, att_weights = captured["out"]
    assert att_weights is None
    for b, n in enumerate(lengths.tolist()):
        alone = mixer(captured["query"][b : b + 1, :n])
        assert (mixed[b, :n] - alone[0]).abs().max() < 1e-5
        assert torch.equal(mixed[b, n:], torch.zeros_like(mixed[b, n:]))
    layer.train()
    layer(x, src_key_padding_mask=pad_mask(lengths, 11))[0].sum().backward()
    assert mixer.backward_mixer.in_proj.weight.grad.abs().sum() > 0


def test_wrapper_passes_lengths_and_query():
    spy = LengthSpy()
    att = SpeechBrainAttention(spy)
    x = torch.randn(3, 4, 8)
    out, w = att(x, x, x, key_padding_mask=pad_mask(torch.tensor([4, 1, 3]), 4), pos_embs=torch.randn(1, 7, 8))
    assert w is None and spy.seen[0] is x
    assert torch.equal(spy.seen[1], torch.tensor([4, 1, 3]))
    att(x, x, x)
    assert spy.seen[1] is None


def test_wrapper_errors():
    att = SpeechBrainAttention(LengthSpy())
    x = torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match="cannot apply"):
        att(x, x, x, attn_mask=torch.zeros(4, 4, dtype=torch.bool))
    assert SpeechBrainAttention(LengthSpy(), ignore_attn_mask=True)(x, x, x, attn_mask=torch.zeros(4, 4))[0].shape == x.shape
    with pytest.raises(ValueError, match="only does self-attention"):
        att(x, torch.randn(2, 5, 8), torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(B, T\) = \(2, 4\)"):
        att(x, x, x, key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))
