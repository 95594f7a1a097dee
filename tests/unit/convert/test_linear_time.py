"""to_linear_time on a tiny teacher of every family: padding, exact copies, teacher untouched, errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from speechbrain_cald.convert import (
    FAMILIES,
    Family,
    UnsupportedModelError,
    find_family,
    register_family,
    to_linear_time,
)
from speechbrain_cald.convert.families.projections import named_linears
from speechbrain_cald.convert.wrappers import HFAttentionWrapper
from float_tolerance import ELEMENTWISE, LAYER, NETWORK, assert_close


def _convert(case, teacher, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_linear_time(teacher, case.mixer, **{**case.options, **kw}).eval()


def _replaced_prefixes(student):
    return [r["module"] + "." for r in student.cald_conversion["replaced"]]


def test_padded_batch_equals_each_sequence_alone(invariant_case, teacher_dirs):
    case = invariant_case
    student = _convert(case, case.load(teacher_dirs(case)))
    family = find_family(student)
    batch, alone, input_lengths = case.make_batch()
    with torch.no_grad():
        out = case.run(student, batch)
        frames = family.frame_lengths(student, input_lengths)
        for i, inputs in enumerate(alone):
            single = case.run(student, inputs)[0]
            got = out[i, : frames[i]] if out.dim() == 3 else out[i]
            assert got.shape == single.shape, (case.name, i, got.shape, single.shape)
            assert_close(got, single, factor=NETWORK, msg=f"{case.name}: sequence {i}")  # batched vs alone, whole model


def test_mixers_receive_the_frame_lengths(case, teacher_dirs):
    """What each mixer is called with equals family.frame_lengths of the inputs."""
    student = _convert(case, case.load(teacher_dirs(case)))
    family = find_family(student)
    seen = []
    for parent, attr in family.attention_slots(student):
        mixer = getattr(parent, attr).mixer
        mixer.register_forward_pre_hook(lambda m, args: seen.append(args[1] if len(args) > 1 else None))
    batch, _, input_lengths = case.make_batch()
    with torch.no_grad():
        case.run(student, batch)
    assert len(seen) == len(family.attention_slots(student)) > 0
    expected = family.frame_lengths(student, input_lengths)
    for lengths in seen:
        if case.kind == "whisper":
            assert lengths is None  # Whisper passes no padding mask at all
        else:
            assert lengths is not None, case.name
            assert lengths.tolist() == expected.tolist(), case.name


def test_non_attention_weights_copied_exactly(case, teacher_dirs):
    teacher = case.load(teacher_dirs(case))
    student = _convert(case, teacher)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    prefixes = _replaced_prefixes(student)
    kept = [k for k in t_state if not k.startswith(tuple(prefixes))]
    assert len(kept) > 0 and len(prefixes) == len(find_family(teacher).layers(teacher))
    for key in kept:
        assert key in s_state, f"{case.name}: {key} missing from the student"
        assert torch.equal(s_state[key], t_state[key]), f"{case.name}: {key} changed"
    # the student adds only mixer parameters, all under the replaced slots
    for key in set(s_state) - set(kept):
        assert key.startswith(tuple(p + "mixer." for p in prefixes)), f"{case.name}: unexpected {key}"
    # and no attention parameter survives outside its mixer
    for key in set(t_state) - set(kept):
        assert key not in s_state, f"{case.name}: {key} still in the student"


def test_teacher_untouched(case, teacher_dirs):
    teacher = case.load(teacher_dirs(case))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    classes = [type(m) for m in teacher.modules()]
    hooks = sum(len(m._forward_pre_hooks) for m in teacher.modules())
    student = _convert(case, teacher, init="attention")
    assert student is not teacher
    assert [type(m) for m in teacher.modules()] == classes
    assert sum(len(m._forward_pre_hooks) for m in teacher.modules()) == hooks
    after = teacher.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not hasattr(teacher, "cald_conversion")


def test_linformer_keeps_attention_weights(teacher_dirs, cases):
    case = cases["bert_eager_cls-linformer"]
    teacher = case.load(teacher_dirs(case))
    student = _convert(case, teacher)
    t_att = teacher.bert.encoder.layer[1].attention.self
    mixer = student.bert.encoder.layer[1].attention.self.mixer
    for ours, theirs in ((mixer.q_proj, t_att.query), (mixer.k_proj, t_att.key), (mixer.v_proj, t_att.value)):
        assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    # BERT keeps attention.output.dense, so the Linformer adds no second output projection
    assert isinstance(mixer.out_proj, nn.Identity)


def test_linformer_share_layer_is_one_projection(teacher_dirs, cases):
    case = cases["roberta_mlm-linformer_layer"]
    student = _convert(case, case.load(teacher_dirs(case)))
    layers = student.roberta.encoder.layer
    assert layers[0].attention.self.mixer.E is layers[1].attention.self.mixer.E


def test_init_attention_maps_value_key_query_output(teacher_dirs, cases):
    """init='attention': v -> x, k -> B, q -> C, o -> out_proj (halved per BiMamba2 direction)."""
    case = cases["wav2vec2_ctc-bimamba2"]
    teacher = case.load(teacher_dirs(case))
    # ngroups = heads and d_state = head_dim make B / C exactly the keys / queries
    opts = dict(d_state=16, ngroups=2, expand=1, headdim=8, chunk_size=4)
    student = to_linear_time(teacher, "bimamba2", init="attention", **opts)
    default = to_linear_time(teacher, "bimamba2", init="default", **opts)
    att = teacher.wav2vec2.encoder.layers[0].attention
    for direction in ("forward_mixer", "backward_mixer"):
        m = getattr(student.wav2vec2.encoder.layers[0].attention.mixer, direction)
        w = m.in_proj.weight
        D = 32
        assert torch.equal(w[D : 2 * D], att.v_proj.weight)
        assert torch.equal(w[2 * D : 2 * D + 32], att.k_proj.weight)
        assert torch.equal(w[2 * D + 32 : 2 * D + 64], att.q_proj.weight)
        assert_close(m.out_proj.weight, att.out_proj.weight * 0.5, factor=ELEMENTWISE)
        d = getattr(default.wav2vec2.encoder.layers[0].attention.mixer, direction)
        assert not torch.equal(d.in_proj.weight[D : 2 * D], att.v_proj.weight)
    notes = student.cald_conversion["replaced"][0]["init"]
    assert any("of v" in n for n in notes) and any("output" in n for n in notes)


def test_init_attention_gpt_neox_splits_fused_qkv(teacher_dirs, cases):
    case = cases["gpt_neox_lm-mamba2"]
    teacher = case.load(teacher_dirs(case))
    student = to_linear_time(teacher, "mamba2", init="attention", d_state=16, ngroups=2, expand=1, headdim=8, chunk_size=4)
    att = teacher.gpt_neox.layers[0].attention
    w = student.gpt_neox.layers[0].attention.mixer.in_proj.weight
    qkv = att.query_key_value.weight.view(2, 3, 16, 32)  # heads, (q, k, v), head_dim, D
    assert torch.equal(w[32:64], qkv[:, 2].reshape(32, 32))  # x <- value
    assert torch.equal(w[64:96], qkv[:, 1].reshape(32, 32))  # B <- key
    assert torch.equal(w[96:128], qkv[:, 0].reshape(32, 32))  # C <- query
    assert student.config.use_cache is False


def test_causal_family_rejects_bidirectional_mixer(teacher_dirs, cases):
    case = cases["gpt_neox_lm-mamba2"]
    teacher = case.load(teacher_dirs(case))
    with pytest.raises(ValueError, match="causal.*'mamba' or 'mamba2'"):
        to_linear_time(teacher, "bimamba2", **case.options)


def test_causal_speechbrain_teacher_warns_for_bidirectional_mixer():
    from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR

    model = TransformerASR(tgt_vocab=5, input_size=8, d_model=16, nhead=2, num_encoder_layers=1,
                           num_decoder_layers=0, d_ffn=16, causal=True)
    with pytest.warns(UserWarning, match="causal"):
        to_linear_time(model, "bimamba2", d_state=4, expand=1, headdim=8)


def test_linformer_without_max_len_for_speech_is_an_error(teacher_dirs, cases):
    case = cases["wav2vec2_base-linformer"]
    teacher = case.load(teacher_dirs(case))
    with pytest.raises(ValueError, match="max_len"):
        to_linear_time(teacher, "linformer", k=8)


def test_unsupported_model_lists_families_and_how_to_add():
    with pytest.raises(UnsupportedModelError) as err:
        to_linear_time(nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2), 1, enable_nested_tensor=False))
    message = str(err.value)
    assert "TransformerEncoder" in message and "register_family" in message
    for name in FAMILIES:
        assert f"- {name}:" in message


def test_unknown_mixer_and_init_are_errors(teacher_dirs, cases):
    teacher = cases["bert-bimamba2"].load(teacher_dirs(cases["bert-bimamba2"]))
    with pytest.raises(KeyError, match="unknown mixer 'transformerxl'"):
        to_linear_time(teacher, "transformerxl")
    with pytest.raises(ValueError, match="init: expected one of"):
        to_linear_time(teacher, "bimamba2", init="svd", **cases["bert-bimamba2"].options)


class _ToyAttention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.qkv = nn.Linear(d, d)

    def forward(self, x, attention_mask=None):
        return self.qkv(x), None


class _ToyLayer(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.att = _ToyAttention(d)
        self.ff = nn.Linear(d, d)

    def forward(self, x, attention_mask=None):
        y, _ = self.att(x, attention_mask=attention_mask)
        return self.ff(x + y)


class _ToyEncoder(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.blocks = nn.ModuleList([_ToyLayer(d) for _ in range(2)])

    def forward(self, x, attention_mask=None):
        for block in self.blocks:
            x = block(x, attention_mask)
        return x


def test_register_family_makes_a_new_model_convertible():
    family = Family(
        name="toy",
        description="test toy encoder",
        encoder_classes=("_ToyEncoder",),
        layers_attr="blocks",
        attention_paths=("att",),
        wrapper=HFAttentionWrapper,
        projections=named_linears((None, None, "qkv", None)),
        dims=lambda att: (att.qkv.in_features, 1),
    )
    register_family(family)
    try:
        with pytest.raises(KeyError, match="already registered"):
            register_family(family)
        teacher = _ToyEncoder().eval()
        student = to_linear_time(teacher, "bimamba2", d_state=4, expand=1, headdim=8, chunk_size=4)
        assert student.cald_conversion["family"] == "toy"
        x = torch.randn(2, 5, 16)
        mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
        with torch.no_grad():
            out = student(x, mask)
            alone = student(x[1:2, :3], None)
        assert_close(out[1, :3], alone[0], factor=NETWORK)
    finally:
        FAMILIES.pop("toy")


def test_left_padding_is_a_clear_error(teacher_dirs, cases):
    case = cases["bert-bimamba2"]
    student = _convert(case, case.load(teacher_dirs(case)))
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]])
    with pytest.raises(ValueError, match="right-padded"):
        student(input_ids=ids, attention_mask=(ids > 0).long())


@pytest.mark.parametrize("name", ["bert-bimamba2", "bert_eager_cls-linformer"])
def test_unpadded_batch_reaches_mixers_as_none(teacher_dirs, cases, name):
    """SDPA drops the mask of an unpadded batch, eager passes an all-zero one: both mean lengths=None."""
    case = cases[name]
    student = _convert(case, case.load(teacher_dirs(case)))
    seen = []
    for parent, attr in find_family(student).attention_slots(student):
        getattr(parent, attr).mixer.register_forward_pre_hook(lambda m, args: seen.append(args[1]))
    ids = torch.randint(3, 60, (2, 7))
    with torch.no_grad():
        student(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert seen == [None, None]


def test_gpt_neox_parallel_residual_is_kept(teacher_dirs, cases):
    """Layer output == x + mixer(ln1 x) + mlp(ln2 x), computed by hand from the student's parts."""
    case = cases["gpt_neox_lm-mamba2"]
    student = _convert(case, case.load(teacher_dirs(case)))
    assert student.config.use_parallel_residual
    layer = student.gpt_neox.layers[0]
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        expected = x + layer.attention.mixer(layer.input_layernorm(x), None) + layer.mlp(layer.post_attention_layernorm(x))
        got = layer(x, attention_mask=None, position_embeddings=None)
    got = got[0] if isinstance(got, tuple) else got
    assert_close(got, expected, factor=LAYER)


def test_default_options_are_the_papers_and_are_recorded(teacher_dirs, cases):
    """One call with no options: BiMamba2 with expand 1, d_state 128; headdim fitted to the tiny width."""
    case = cases["sb_conformer-bimamba2"]
    teacher = case.load(teacher_dirs(case))
    student = to_linear_time(teacher).eval()
    options = student.cald_conversion["mixer_options"]
    assert options["expand"] == 1 and options["d_state"] == 128 and options["headdim"] == 32  # d_model 32
    inner = student.encoder.layers[0].mha_layer.mixer.forward_mixer
    assert (inner.d_state, inner.expand, inner.headdim) == (128, 1, 32)
    batch, alone, lengths = case.make_batch()
    with torch.no_grad():
        out = case.run(student, batch)
        single = case.run(student, alone[1])[0]
    assert_close(out[1, : lengths[1]], single, factor=NETWORK)


def test_gpt_neox_student_generates_like_a_full_recompute(teacher_dirs, cases):
    case = cases["gpt_neox_lm-mamba2"]
    student = _convert(case, case.load(teacher_dirs(case)))
    prompt = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        generated = student.generate(prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        x = prompt
        for _ in range(4):
            x = torch.cat([x, student(x).logits[:, -1].argmax(-1, keepdim=True)], 1)
        assert torch.equal(generated, x)
        # the recurrent state in the cache continues the sequence exactly (convert/state_cache.py)
        cached = student.generate(prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False, use_cache=True)
        assert torch.equal(cached, x)
        with pytest.raises(ValueError, match="no cache was given"):
            student(x[:, -1:], position_ids=torch.tensor([[x.shape[1] - 1]]))


def test_converting_a_student_again_is_a_clear_error(teacher_dirs, cases):
    case = cases["bert-bimamba2"]
    student = _convert(case, case.load(teacher_dirs(case)))
    with pytest.raises(ValueError, match="already converted"):
        to_linear_time(student, "bimamba2")


def test_whisper_only_encoder_self_attention_is_replaced(teacher_dirs, cases):
    case = cases["whisper-bimamba2"]
    student = _convert(case, case.load(teacher_dirs(case)))
    model = student.model
    assert all(type(layer.self_attn).__name__ == "HFAttentionWrapper" for layer in model.encoder.layers)
    for layer in model.decoder.layers:
        assert type(layer.self_attn).__name__ == "WhisperAttention"
        assert type(layer.encoder_attn).__name__ == "WhisperAttention"
    batch, _, _ = case.make_batch()
    with torch.no_grad():
        logits = case.run(student, batch)
    assert logits.shape == (2, 3, 60) and torch.isfinite(logits).all()


def test_student_trains_gradients_reach_mixers(teacher_dirs, cases):
    case = cases["wav2vec2_ctc-bimamba2"]
    student = _convert(case, case.load(teacher_dirs(case))).train()
    batch, _, _ = case.make_batch()
    labels = torch.randint(1, 12, (3, 5))
    loss = student(**batch, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    mixer = student.wav2vec2.encoder.layers[0].attention.mixer
    grads = [p.grad for p in mixer.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
