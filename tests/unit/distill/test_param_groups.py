"""new_params_lr: the conversion's new parameters get their own rate through any scheduler."""

import pytest
import torch
from speechbrain.nnet.schedulers import NoamScheduler
from transformers import BertConfig, BertModel

from speechbrain_cald.convert import new_parameters, to_linear_time
from speechbrain_cald.distill.param_groups import build_optimizer


def _bert():
    torch.manual_seed(0)
    config = BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        vocab_size=30, max_position_embeddings=12)
    model = BertModel(config)
    with torch.no_grad():  # no constant tensors (norm weights of 1) that a new module could equal by chance
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def _values(model):
    return [p.detach() for p in model.parameters()]


@pytest.mark.parametrize("mixer, options", [
    ("linformer", dict(k=4, share="none")),
    ("linformer", dict(k=4, share="layer")),
    ("bimamba2", dict(d_state=8, expand=1, headdim=8, chunk_size=4)),
])
def test_new_parameters_are_exactly_those_not_copied_from_the_teacher(mixer, options):
    teacher = _bert()
    student = to_linear_time(teacher, mixer, **options)
    new = {id(p) for _, p in new_parameters(student)}
    assert new and len(new) == len(new_parameters(student))  # each shared parameter once
    teacher_values = _values(teacher)
    for name, p in student.named_parameters():
        copied = any(p.shape == t.shape and torch.equal(p.detach(), t) for t in teacher_values)
        assert copied != (id(p) in new), name


def test_linformer_keeps_qkv_and_out_as_old_parameters():
    student = to_linear_time(_bert(), "linformer", k=4)
    names = [name.rsplit(".", 2)[-2] for name, _ in new_parameters(student)]
    assert names == ["E", "F"] * 2


def test_a_model_no_conversion_built_has_none_and_new_params_lr_is_refused_there():
    teacher = _bert()
    assert new_parameters(teacher) == []
    with pytest.raises(ValueError, match="new_params_lr: 0.01.*not a to_linear_time student"):
        build_optimizer(lambda p: torch.optim.AdamW(p, lr=1e-4), list(teacher.parameters()), teacher, 0.01)


def test_the_scale_survives_a_saved_and_reloaded_optimizer():
    student = to_linear_time(_bert(), "linformer", k=4)
    make = lambda p: torch.optim.AdamW(p, lr=1e-4)  # noqa: E731
    opt = build_optimizer(make, list(student.parameters()), student, 0.02)
    again = build_optimizer(make, list(student.parameters()), student, 0.02)
    again.load_state_dict(opt.state_dict())
    assert again.param_groups[1]["lr_scale"] == pytest.approx(200.0, rel=1e-12)


def _fake_conversion(student):
    # the tiny student's mixers stand for a conversion's new modules
    student.cald_conversion = {"replaced": [{"module": f"layers.{i}.mixer"} for i in range(len(student.layers))]}
    return student


def test_distill_brain_puts_the_mixers_in_their_group_and_keeps_the_ratio_through_the_scheduler(tiny):
    teacher = tiny.TinyEncoder()
    student = _fake_conversion(tiny.make_student(teacher))
    sched = NoamScheduler(lr_initial=0.05, n_warmup_steps=2)
    brain = tiny.build_brain("unguided", teacher=teacher, student=student,
                             hparams={"lr_scheduler": sched, "new_params_lr": 0.5})
    ratios = []
    brain.end_callbacks.append(lambda b, step: ratios.append(
        b.optimizer.param_groups[1]["lr"] / b.optimizer.param_groups[0]["lr"]))
    rates = []
    brain.start_callbacks.append(lambda b: rates.append(b.optimizer.param_groups[0]["lr"]))
    brain.start_callbacks.append(lambda b: ratios.append(
        b.optimizer.param_groups[1]["lr"] / b.optimizer.param_groups[0]["lr"]))
    brain.fit(range(1), tiny.loader(tiny.make_batches(3)))
    mixer_ids = {id(p) for layer in student.layers for p in layer.mixer.parameters()}
    groups = brain.optimizer.param_groups
    assert {id(p) for p in groups[1]["params"]} == mixer_ids
    assert not mixer_ids & {id(p) for p in groups[0]["params"]}
    assert len(set(rates)) > 1  # the scheduler did change the rate
    assert ratios == pytest.approx([10.0] * 6, rel=1e-12)


# ---------------------------------------------------------------- no weight decay on biases and norms
def _reference_speech_decayed(name):
    """The CALD speech reference's rule (speech/models/model.py l. 119-120), on its names (under ``asr_model.wav2vec2``)."""
    name = "asr_model.wav2vec2." + name
    return name.split(".")[-1] != "bias" and name.split(".")[-2] != "layer_norm"


def _reference_glue_decayed(name):
    """The CALD GLUE reference's rule (nlp/run_glue_linformer.py l. 508-519)."""
    return not any(nd in name for nd in ["bias", "LayerNorm.weight"])


def _decay_of(optimizer):
    return {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}


def test_speech_groups_are_the_references():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                            conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=4,
                            num_conv_pos_embedding_groups=2, do_stable_layer_norm=True, feat_extract_norm="layer")
    model = Wav2Vec2Model(config)
    opt = build_optimizer(lambda p: torch.optim.AdamW(p, lr=3e-4, weight_decay=5e-3), list(model.parameters()),
                          model, no_decay=["layer_norm"])
    decay = _decay_of(opt)
    names = dict(model.named_parameters())
    assert any(n.endswith("final_layer_norm.weight") for n in names)  # decayed by the reference's rule too
    for name, p in names.items():
        assert decay[id(p)] == (5e-3 if _reference_speech_decayed(name) else 0.0), name


@pytest.mark.parametrize("new_params_lr", [None, 0.05])
def test_text_groups_are_the_references_and_keep_new_params_lr(new_params_lr):
    student = to_linear_time(_bert(), "linformer", k=4)
    opt = build_optimizer(lambda p: torch.optim.AdamW(p, lr=1e-4, weight_decay=0.01), list(student.parameters()),
                          student, new_params_lr, no_decay=["LayerNorm"])
    decay = _decay_of(opt)
    for name, p in student.named_parameters():
        assert decay[id(p)] == (0.01 if _reference_glue_decayed(name) else 0.0), name
    assert opt.param_groups[0]["lr"] == 1e-4 and "lr_scale" not in opt.param_groups[0]
    new = {id(p) for _, p in new_parameters(student)}
    for group in opt.param_groups:
        in_new = {id(p) in new for p in group["params"]}
        if new_params_lr is None:
            assert group["lr"] == 1e-4
        else:  # each group all new or all kept, at its own rate
            assert len(in_new) == 1
            assert group["lr"] == pytest.approx(new_params_lr if in_new == {True} else 1e-4)


def test_clipping_covers_every_group_and_inf_clips_nothing():
    from speechbrain_cald.distill import DistillBrain

    def brain(max_grad_norm):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        b = DistillBrain(modules={"model": model}, opt_class=lambda p: torch.optim.SGD(p, lr=0.1),
                         hparams={"no_weight_decay": ["1"], "max_grad_norm": max_grad_norm},
                         run_opts={"noprogressbar": True})
        b.init_optimizers()
        for p in model.parameters():
            p.grad = torch.full_like(p, 100.0)
        return b, model

    b, model = brain(1.0)
    assert len(b.optimizer.param_groups) == 2  # the LayerNorm ("1") and the biases without decay
    b._clip_every_group()
    total = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert float(total) == pytest.approx(1.0, rel=1e-4)
    b, model = brain(float("inf"))
    b._clip_every_group()
    assert all(torch.all(p.grad == 100.0) for p in model.parameters())
