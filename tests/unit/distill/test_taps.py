"""LayerTaps and layer discovery: states equal to an independent reference, errors."""

import pytest
import torch
from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
from torch import nn

from speechbrain_cald.distill.taps import (
    LayerTaps,
    every_nth_layer_map,
    find_layers,
    lengths_to_mask,
    unwrap,
)
from float_tolerance import REDUCTION, assert_close


def test_taps_equal_speechbrain_hidden_states():
    enc = TransformerEncoder(num_layers=3, nhead=2, d_ffn=16, d_model=8, output_hidden_states=True).eval()
    taps = LayerTaps(find_layers(enc, "layers"))
    x = torch.randn(2, 5, 8)
    pad = ~lengths_to_mask(torch.tensor([5, 3]), 5)
    _, _, hidden = enc(x, src_key_padding_mask=pad)
    states = taps.take()
    assert len(states) == 3
    for got, ref in zip(states, hidden[1:]):  # hidden[0] is the input embedding
        assert torch.equal(got, ref)
    assert taps.states == []


def test_taps_follow_every_call_and_detach_option():
    shared = nn.Linear(4, 4)
    taps = LayerTaps([shared], detach=True)
    x = torch.randn(1, 2, 4, requires_grad=True)
    shared(shared(x))  # a recursive model calls its shared layer twice
    assert len(taps.states) == 2 and not taps.states[0].requires_grad
    taps.remove()
    shared(x)
    assert taps.states == []


def test_find_layers_errors_and_unwrap():
    net = nn.Module()
    net.layers = nn.ModuleList([nn.Linear(2, 2)])
    net.head = nn.Linear(2, 2)
    assert find_layers(nn.DataParallel(net), "layers") is net.layers
    assert unwrap(net) is net
    with pytest.raises(TypeError, match="should be an nn.ModuleList, found Linear"):
        find_layers(net, "head")
    with pytest.raises(AttributeError, match="'encoder.layers' is not a submodule"):
        find_layers(net, "encoder.layers")
    with pytest.raises(LookupError, match="tap_layers"):
        find_layers(nn.Linear(2, 2))


def test_every_nth_layer_map():
    assert every_nth_layer_map(2, 4) == [1, 3]
    assert every_nth_layer_map(3, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="multiple"):
        every_nth_layer_map(5, 12)


def test_layers_found_through_the_convert_family_registry():
    """No path given: the SpeechBrain TransformerASR family says where the layers are."""
    from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR

    asr = TransformerASR(
        tgt_vocab=5, input_size=8, d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=0,
        d_ffn=16, encoder_module="conformer", normalize_before=True,
    ).eval()
    model = nn.ModuleDict({"CNN": nn.Linear(2, 8), "Transformer": asr})
    layers = find_layers(model)
    assert layers is asr.encoder.layers
    taps = LayerTaps(layers)
    out = asr.encode(torch.randn(2, 5, 8), torch.tensor([1.0, 0.6]))
    assert len(taps.states) == 2
    # The conformer encoder applies its final norm after the last layer.
    assert_close(asr.encoder.norm(taps.states[-1]), out, factor=REDUCTION)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_taps_with_input_equal_transformers_hidden_states(family):
    """include_input: the embedding output then every layer output, as output_hidden_states."""
    import transformers

    cls = {"bert": (transformers.BertConfig, transformers.BertModel),
           "roberta": (transformers.RobertaConfig, transformers.RobertaModel)}[family]
    torch.manual_seed(0)
    config = cls[0](hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                    vocab_size=40, max_position_embeddings=24)
    model = cls[1](config).eval()
    taps = LayerTaps(find_layers(model), include_input=True)
    ids = torch.randint(3, 40, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    states = taps.take()
    assert len(ref) == 4 and len(states) == 4
    for got, want in zip(states, ref):
        assert torch.equal(got, want)
    taps.remove()


def test_taps_with_input_on_a_recursive_layer():
    """One shared layer called twice: its first input, then both outputs."""
    shared = nn.Linear(4, 4)
    taps = LayerTaps([shared], include_input=True)
    x = torch.randn(1, 2, 4)
    y1 = shared(x)
    y2 = shared(y1)
    states = taps.take()
    assert [torch.equal(a, b) for a, b in zip(states, [x, y1, y2])] == [True, True, True]
    shared(x)  # the next pass (states taken) records its input again
    assert len(taps.states) == 2
    taps.clear()
    with pytest.raises(TypeError, match="Linear was called without a tensor argument"):
        taps._keep_input(shared, (), {"flag": True})
