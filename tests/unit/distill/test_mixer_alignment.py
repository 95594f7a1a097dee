"""Mixer alignment: only the new mixers move, they move towards the attention, the teacher is untouched."""

import pytest
import torch

from speechbrain_cald.convert import new_parameters, to_linear_time
from speechbrain_cald.distill.mixer_alignment import MixerAlignment, _crops, align_from_hparams, align_mixers


def _pair(mixer="bimamba2", **options):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8,
                        max_source_positions=20, vocab_size=60, max_target_positions=8, pad_token_id=0,
                        bos_token_id=1, eos_token_id=1, decoder_start_token_id=2)
    teacher = WhisperForConditionalGeneration(cfg).eval()
    return teacher, to_linear_time(teacher, mixer, **options)


def _encode(model, x):
    return model.model.encoder(x)


def test_only_new_parameters_move_and_the_teacher_is_untouched():
    teacher, student = _pair(d_state=8, headdim=8, chunk_size=8)
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_s = {k: v.clone() for k, v in student.state_dict().items()}
    flags = [p.requires_grad for p in student.parameters()]
    new = {name for name, _ in new_parameters(student)}
    losses = align_mixers(student, teacher, [torch.randn(2, 8, 40)], _encode,
                          MixerAlignment(steps=6, lr=1e-2, inner_steps=3, crop_frames=10))
    assert len(losses) == 6  # one list, cycled
    assert all(torch.equal(before_t[k], v) for k, v in teacher.state_dict().items())
    changed = {k for k, v in student.state_dict().items() if not torch.equal(before_s[k], v)}
    assert changed and changed <= new
    assert [p.requires_grad for p in student.parameters()] == flags  # restored


def test_the_loss_is_each_mixers_error_against_its_attention():
    """At step 0 the loss is the mean over layers of |mixer(x) - attention(x)|^2 / |attention(x)|^2."""
    teacher, student = _pair(d_state=8, headdim=8, chunk_size=8)
    x = torch.randn(2, 8, 40)
    calls = []
    hooks = [layer.self_attn.register_forward_hook(lambda m, a, k, o: calls.append((k["hidden_states"], o[0])),
                                                   with_kwargs=True) for layer in teacher.model.encoder.layers]
    with torch.no_grad():
        _encode(teacher, x)
        expected = sum(float(((s.self_attn(hidden_states=h)[0] - y) ** 2).mean() / (y**2).mean())
                       for s, (h, y) in zip(student.model.encoder.layers, calls)) / 2
    for h in hooks:
        h.remove()
    losses = align_mixers(student, teacher, [x], _encode, MixerAlignment(steps=1, lr=0.0, inner_steps=1))
    assert abs(losses[0] - expected) <= 1e-5 * expected


def test_alignment_lowers_the_error_for_linformer_too():
    teacher, student = _pair("linformer", k=8)
    x = [torch.randn(2, 8, 40) for _ in range(2)]
    losses = align_mixers(student, teacher, x, _encode, MixerAlignment(steps=30, lr=3e-2, inner_steps=2))
    assert sum(losses[-5:]) < sum(losses[:5])


def test_crops_are_aligned_windows_of_both_tensors():
    x = torch.arange(2 * 10 * 1.0).view(2, 10, 1)
    xs, ys = _crops(x, -x, 4, 3, torch.Generator().manual_seed(0))
    assert xs.shape == (6, 4, 1) and torch.equal(ys, -xs)
    assert bool(((xs[:, 1:] - xs[:, :-1]) == 1).all())  # consecutive frames of one sequence


def test_an_exhausted_iterator_is_an_error_not_a_hang():
    teacher, student = _pair(d_state=8, headdim=8, chunk_size=8)
    once = iter([torch.randn(1, 8, 40)])
    with pytest.raises(ValueError, match="exhausted iterator"):
        align_mixers(student, teacher, once, _encode, MixerAlignment(steps=5, lr=1e-3, inner_steps=1))


def test_zero_steps_do_nothing_and_a_teacher_is_not_a_student():
    teacher, student = _pair(d_state=8, headdim=8, chunk_size=8)
    assert align_mixers(student, teacher, [], _encode, MixerAlignment(steps=0)) == []
    with pytest.raises(ValueError, match="no new parameters"):
        align_mixers(teacher, teacher, [torch.randn(1, 8, 40)], _encode, MixerAlignment(steps=1))


def _bert_pair():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    teacher = BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=32, vocab_size=30)).eval()
    return teacher, to_linear_time(teacher, "bimamba2", d_state=4, headdim=8, chunk_size=4)


def _bert(model, batch):
    return model(input_ids=batch[0], attention_mask=batch[1])


def test_with_valid_the_padded_positions_do_not_count():
    """The loss over a padded batch equals the loss over its real tokens alone (the padding's outputs ignored)."""
    teacher, student = _bert_pair()
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])

    def loss(batch, valid):
        return align_mixers(student, teacher, [batch], _bert, MixerAlignment(steps=1, lr=0.0, inner_steps=1),
                            valid=valid)[0]

    padded = loss((ids, mask), lambda b: b[1].bool())
    unmasked = loss((ids, mask), None)
    # the same loss by hand, each layer's squared error summed over the real tokens only
    calls = []
    hooks = [layer.attention.self.register_forward_hook(lambda m, a, k, o: calls.append((a, k, o[0])),
                                                        with_kwargs=True) for layer in teacher.encoder.layer]
    with torch.no_grad():
        _bert(teacher, (ids, mask))
        terms = []
        for layer, (a, k, y) in zip(student.encoder.layer, calls):
            out = layer.attention.self(*a, **k)
            out = out[0] if isinstance(out, tuple) else out
            w = mask[..., None].float()
            terms.append(float((((out - y) ** 2) * w).sum() / ((y**2) * w).sum()))
    for h in hooks:
        h.remove()
    expected = sum(terms) / len(terms)
    assert abs(padded - expected) <= 1e-5 * expected
    assert abs(unmasked - padded) > 1e-3 * padded  # the padding's outputs would have counted


def test_a_mask_of_the_wrong_shape_is_named():
    teacher, student = _bert_pair()
    batch = (torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 1]]))
    with pytest.raises(ValueError, match=r"`valid` gave a \(1, 2\) mask for attention outputs of \(1, 3\)"):
        align_mixers(student, teacher, [batch], _bert, MixerAlignment(steps=1), valid=lambda b: b[1][:, :2].bool())


class _Checkpointer:
    def __init__(self, found):
        self.found, self.checkpoints_dir = found, "save"

    def find_checkpoint(self):
        return self.found


def test_align_from_hparams_runs_only_for_a_fresh_run_with_a_teacher():
    teacher, student = _bert_pair()
    batch = (torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 1]]))
    hp = {"mixer_alignment": {"steps": 3, "lr": 1e-2, "inner_steps": 1}, "seed": 0, "checkpointer": _Checkpointer(None)}
    assert len(align_from_hparams(hp, {"model": student, "teacher": teacher}, [batch], _bert)) == 3
    assert align_from_hparams(hp, {"model": student}, [batch], _bert) == []  # unguided: no teacher
    resumed = dict(hp, checkpointer=_Checkpointer("save/CKPT+1"))
    assert align_from_hparams(resumed, {"model": student, "teacher": teacher}, [batch], _bert) == []
    assert align_from_hparams({"checkpointer": _Checkpointer(None)}, {"model": student, "teacher": teacher},
                              [batch], _bert) == []  # no mixer_alignment key: off
