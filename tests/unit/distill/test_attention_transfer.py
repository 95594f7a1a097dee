"""Attention transfer (``transfer_steps``): each mixer fit to the attention it replaced, on the teacher's input."""

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from speechbrain_cald.convert import new_parameters, to_linear_time
from speechbrain_cald.distill import DistillBrain, ModelOutput
from speechbrain_cald.distill.attention_transfer import AttentionTransfer, relative_mse

IDS = torch.tensor([[2, 5, 7, 9, 3], [2, 6, 3, 0, 0], [2, 8, 8, 4, 3]])
LENGTHS = torch.tensor([5, 3, 5])
MASK = (torch.arange(5)[None] < LENGTHS[:, None]).long()
LABELS = torch.tensor([0, 1, 2])


def _teacher():
    torch.manual_seed(0)
    config = BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        vocab_size=12, max_position_embeddings=8, num_labels=3, attn_implementation="eager")
    return BertForSequenceClassification(config).eval()


def _student(teacher):
    return to_linear_time(teacher, "bimamba2", d_state=4, expand=1, headdim=8, chunk_size=4)


def _eps_bound(*tensors):
    # float32 sums of ~hundreds of products, each term of the size of the largest value
    scale = max(float(t.abs().max()) for t in tensors)
    return 256 * torch.finfo(torch.float32).eps * max(1.0, scale**2)


def test_the_loss_is_each_slots_relative_error_on_the_teachers_own_layer_input():
    teacher = _teacher()
    student = _student(teacher)
    transfer = AttentionTransfer(student, teacher)
    with torch.no_grad():
        with transfer.recording():
            out = teacher(input_ids=IDS, attention_mask=MASK, output_hidden_states=True)
        loss = transfer.loss(LENGTHS)
        # by hand: layer i's attention and mixer on the teacher's input of layer i
        valid = MASK.bool()[..., None].float()
        expected = []
        for i, (t_layer, s_layer) in enumerate(zip(teacher.bert.encoder.layer, student.bert.encoder.layer)):
            x = out.hidden_states[i]
            ext = torch.zeros(3, 1, 1, 5).masked_fill(~MASK.bool()[:, None, None], torch.finfo(torch.float32).min)
            target = t_layer.attention.self(x, attention_mask=ext)[0]
            mixed = s_layer.attention.self.mixer(x, LENGTHS)
            expected.append(((mixed - target) ** 2 * valid).sum() / (target**2 * valid).sum())
    expected = torch.stack(expected).mean()
    assert abs(float(loss) - float(expected)) <= _eps_bound(expected) * float(expected)
    transfer.remove()


def test_relative_mse_ignores_padded_frames_and_is_scale_free():
    t = torch.randn(2, 4, 3)
    s = t + 0.1 * torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).bool()
    noisy = s.clone()
    noisy[1, 2:] = 1e3
    a, b = relative_mse(s, t, mask), relative_mse(noisy, t, mask)
    assert float(a) == float(b)
    c = relative_mse(10 * s, 10 * t, mask)
    assert abs(float(c) - float(a)) <= 64 * torch.finfo(torch.float32).eps * float(a)
    with pytest.raises(ValueError, match="differ in shape"):
        relative_mse(s[:, :3], t)


def test_a_student_of_another_depth_or_an_unconverted_one_is_refused():
    teacher = _teacher()
    with pytest.raises(ValueError, match="no mixer: convert it first"):
        AttentionTransfer(_teacher(), teacher)
    deeper = BertForSequenceClassification(BertConfig(
        hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, vocab_size=12,
        max_position_embeddings=8, num_labels=3))
    with pytest.raises(ValueError, match="the teacher has 2 attention slots, the student 3"):
        AttentionTransfer(_student(deeper), teacher)


class TextBrain(DistillBrain):
    def run_model(self, model, batch, stage):
        return ModelOutput(model(input_ids=IDS, attention_mask=MASK).logits, LENGTHS)

    def task_loss(self, output, batch, stage):
        return nn.functional.cross_entropy(output.logits, LABELS)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        self.history.append(dict(self.last_terms))


def _brain(transfer_steps, guide="target"):
    teacher = _teacher()
    student = _student(teacher)
    brain = TextBrain(
        modules={"model": student, "teacher": teacher},
        opt_class=lambda p: torch.optim.Adam(p, lr=1e-2),
        hparams={"guide": guide, "alpha_layer": 1.0, "transfer_steps": transfer_steps},
        run_opts={"noprogressbar": True},
    )
    brain.history = []
    return brain, student


def test_distill_brain_transfers_first_moving_only_the_mixers_then_trains_with_cald():
    brain, student = _brain(transfer_steps=30)
    new = {id(p) for _, p in new_parameters(student)}
    kept_before = {n: p.detach().clone() for n, p in student.named_parameters() if id(p) not in new}
    mixers_before = {n: p.detach().clone() for n, p in student.named_parameters() if id(p) in new}
    brain.fit(range(1), [0] * 30)
    losses = [h["transfer"] for h in brain.history]
    assert all(set(h) == {"transfer"} for h in brain.history)
    assert losses[-1] < 0.5 * losses[0]  # one batch, overfit: the mixers approach the attention
    for n, p in student.named_parameters():
        if n in kept_before:
            assert torch.equal(p.detach(), kept_before[n]), n
    assert any(not torch.equal(p.detach(), mixers_before[n]) for n, p in student.named_parameters() if n in mixers_before)
    brain.cfg.transfer_steps = 0  # past the transfer: CALD's terms again
    brain.fit(range(2), [0])
    assert set(brain.history[-1]) == {"task", "layer"}


def test_the_unguided_student_has_no_teacher_to_transfer_from():
    brain, _ = _brain(transfer_steps=5, guide="unguided")
    assert brain.transfer is None
    brain.fit(range(1), [0, 0])
    assert all(set(h) == {"task"} for h in brain.history)
