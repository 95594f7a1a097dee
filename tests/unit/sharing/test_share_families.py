"""to_shared over the other registered families: RoBERTa, HuBERT, WavLM,
Wav2Vec2-Conformer, Whisper (encoder), GPT-NeoX (with its key-value cache)."""

import pytest
import torch
import transformers as T

from speechbrain_cald.convert.share import to_shared
from float_tolerance import NETWORK, assert_close

SPEECH = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
              conv_dim=(8, 8), conv_kernel=(3, 3), conv_stride=(2, 2), num_conv_pos_embeddings=4,
              num_conv_pos_embedding_groups=2)


def _wav_call(model):
    g = torch.Generator().manual_seed(1)
    wav = torch.randn(2, 120, generator=g)
    mask = torch.ones(2, 120, dtype=torch.long)
    mask[1, 80:] = 0
    return model(wav, attention_mask=mask).last_hidden_state


def _text_call(model):
    ids = torch.tensor([[1, 5, 7, 9, 3, 2], [4, 8, 2, 6, 0, 0]])
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    no_cache = {"use_cache": False} if "GPTNeoX" in type(model).__name__ else {}  # a decoder: no cache needed
    return model(input_ids=ids, attention_mask=mask, **no_cache).last_hidden_state


def _whisper_call(model):
    feats = torch.randn(2, 8, 40, generator=torch.Generator().manual_seed(2))
    return model.encoder(feats).last_hidden_state


def _roberta():
    return T.RobertaModel(T.RobertaConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                          intermediate_size=32, vocab_size=30, max_position_embeddings=40))


def _wav2vec2_conformer():
    return T.Wav2Vec2ConformerModel(T.Wav2Vec2ConformerConfig(**SPEECH, conv_depthwise_kernel_size=3))


def _whisper():
    return T.WhisperModel(T.WhisperConfig(
        d_model=16, encoder_layers=3, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=60, num_mel_bins=8, max_source_positions=20,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1))


def _gpt_neox():
    return T.GPTNeoXModel(T.GPTNeoXConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                          intermediate_size=32, vocab_size=30))


BUILDERS = {
    "roberta": (_roberta, _text_call),
    "hubert": (lambda: T.HubertModel(T.HubertConfig(**SPEECH)), _wav_call),
    "wavlm": (lambda: T.WavLMModel(T.WavLMConfig(**SPEECH, num_buckets=8, max_bucket_distance=20)),
              _wav_call),
    "wav2vec2_conformer": (_wav2vec2_conformer, _wav_call),
    "whisper": (_whisper, _whisper_call),
    "gpt_neox": (_gpt_neox, _text_call),
}


def _build(name):
    torch.manual_seed(0)
    build, call = BUILDERS[name]
    return build().eval(), call


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_residual_full_rank_equals_teacher(name):
    teacher, call = _build(name)
    student = to_shared(teacher, "residual", group_size=3, rank=10_000).eval()
    with torch.no_grad():
        assert_close(call(student), call(teacher), factor=NETWORK)


@pytest.mark.parametrize("name", sorted(set(BUILDERS) - {"wavlm"}))
@pytest.mark.parametrize("adapter", ["bottleneck", "lora"])
def test_recursive_identity_equals_teacher_and_shared_runs(name, adapter):
    teacher, call = _build(name)
    same = to_shared(teacher, "recursive", num_unique=3, adapter=adapter, adapter_norm=False).eval()
    with torch.no_grad():
        assert_close(call(same), call(teacher), factor=NETWORK)
    small = to_shared(teacher, "recursive", num_unique=1, num_steps=2, adapter=adapter).eval()
    with torch.no_grad():
        out = call(small)
    assert out.shape == call(teacher).shape and torch.isfinite(out).all()


def test_wavlm_recursive_is_refused_with_the_reason():
    teacher, _ = _build("wavlm")
    with pytest.raises(ValueError, match="layers 0 and 1 differ in structure.*rel_attn_embed"):
        to_shared(teacher, "recursive", num_unique=1)


def test_gpt_neox_recursive_key_value_cache_has_one_slot_per_step():
    teacher, _ = _build("gpt_neox")
    student = to_shared(teacher, "recursive", num_unique=1, adapter="lora", lora_rank=2).eval()
    ids = torch.tensor([[3, 7, 1, 9, 4, 2]])
    with torch.no_grad():
        full = student(input_ids=ids, use_cache=False).last_hidden_state
        first = student(input_ids=ids[:, :4], use_cache=True)
        rest = student(input_ids=ids[:, 4:], past_key_values=first.past_key_values, use_cache=True)
    assert_close(torch.cat([first.last_hidden_state, rest.last_hidden_state], 1), full, factor=NETWORK)
