"""DistillBrain plumbing: progress bar terms, precision, student lr scheduler, summary log, embedding taps."""

import logging

import pytest
import speechbrain as sb
import torch
from speechbrain.nnet.schedulers import NoamScheduler

from speechbrain_cald.distill import TrajectoryGuide
from speechbrain_cald.distill.taps import lengths_to_mask


def test_progress_bar_shows_each_term(tiny, capsys):
    brain = tiny.build_brain("target", run_opts={"noprogressbar": False})
    brain.fit(range(1), tiny.loader(tiny.make_batches(2)), progressbar=True)
    err = capsys.readouterr().err
    for term in ("train_loss=", "task=", "layer=", "logits="):
        assert term in err


def test_progress_bars_count_train_and_valid_batches_and_follow_progressbar(tiny, capsys):
    """DistillBrain draws the bars (SpeechBrain's own are off): one per stage, counting its batches."""
    brain = tiny.build_brain("target", run_opts={"noprogressbar": True})
    brain.fit(range(1), tiny.loader(tiny.make_batches(2)), tiny.loader(tiny.make_batches(3)), progressbar=True)
    err = capsys.readouterr().err
    assert "2/2" in err and "3/3" in err and "train_loss=" in err
    brain = tiny.build_brain("target", run_opts={"noprogressbar": False})
    brain.fit(range(1), tiny.loader(tiny.make_batches(2)), tiny.loader(tiny.make_batches(3)), progressbar=False)
    assert "2/2" not in capsys.readouterr().err and not brain.progress.active


def test_bf16_autocast_runs_and_losses_stay_fp32(tiny):
    brain = tiny.build_brain("target", run_opts={"precision": "bf16"})
    seen = []
    brain.end_callbacks.append(lambda b, step: seen.append(b.last_terms))
    brain.fit(range(1), tiny.loader(tiny.make_batches(2)))
    assert len(seen) == 2 and all(v == v for terms in seen for v in terms.values())


def test_student_lr_scheduler_is_stepped_per_optimizer_step(tiny):
    sched = NoamScheduler(lr_initial=1.0, n_warmup_steps=2)
    brain = tiny.build_brain("unguided", hparams={"lr_scheduler": sched}, run_opts={"grad_accumulation_factor": 2})
    lrs = []
    brain.end_callbacks.append(lambda b, step: lrs.append(b.optimizer.param_groups[0]["lr"]))
    brain.fit(range(1), tiny.loader(tiny.make_batches(4)))
    assert sched.n_steps == 2  # two optimizer steps, not four batches
    # batches 2 and 4 end with a step: the lr changes there only
    assert lrs[0] != lrs[1] == lrs[2] != lrs[3]


def test_reference_speech_schedule_gives_the_first_step_lr_0(tiny):
    """WarmupExpDecayLR: the rate each optimizer step uses, from 0 at the first (the CALD speech reference)."""
    from speechbrain_cald.distill.schedules import WarmupExpDecayLR

    sched = WarmupExpDecayLR(lr=1.0, final_lr=0.01, warmup_steps=2, decay_steps=2)
    brain = tiny.build_brain("unguided", hparams={"lr_scheduler": sched})
    used, step = [], brain.optimizers_step

    def recorded():
        used.append(brain.optimizer.param_groups[0]["lr"])
        step()

    brain.optimizers_step = recorded
    brain.fit(range(1), tiny.loader(tiny.make_batches(6)))
    assert used == pytest.approx([0.0, 0.5, 1.0, 0.1, 0.01, 0.01])


def test_epoch_summary_line(tiny, caplog):
    caplog.set_level(logging.INFO)
    brain = tiny.build_brain("target")
    brain.fit(range(1), tiny.loader(tiny.make_batches(2)), tiny.loader(tiny.make_batches(1, seed=3)))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 0 |")]
    assert len(lines) == 1
    line = lines[0]
    assert "step 2" in line and "task" in line and "layer" in line and "logits" in line
    assert "lr 0.05" in line and "valid loss" in line and line.endswith("teacher target")


def test_hooks_must_be_overridden(tiny):
    from speechbrain_cald.distill import DistillBrain

    brain = DistillBrain(modules={"model": tiny.TinyEncoder()}, hparams={"guide": "unguided"})
    with pytest.raises(NotImplementedError, match="run_model"):
        brain.compute_forward(tiny.make_batches(1)[0], None)
    with pytest.raises(KeyError, match="'model'"):
        DistillBrain(modules={"student": torch.nn.Linear(2, 2)})


def test_every_hook_sees_the_prepared_batch_once(tiny):
    calls = {"prepare": 0, "run": [], "loss": []}

    class Prepared(tiny.ToyBrain):
        def prepare_batch(self, batch, stage):
            calls["prepare"] += 1
            x, lengths, y = batch
            return {"x": x * 2.0, "lengths": lengths, "y": y}

        def run_model(self, model, batch, stage):
            calls["run"].append(isinstance(batch, dict))
            return super().run_model(model, (batch["x"], batch["lengths"], batch["y"]), stage)

        def task_loss(self, output, batch, stage):
            calls["loss"].append(isinstance(batch, dict))
            return super().task_loss(output, (None, batch["lengths"], batch["y"]), stage)

    teacher = tiny.TinyEncoder()
    brain = Prepared(
        modules={"model": tiny.make_student(teacher), "teacher": teacher},
        opt_class=lambda p: torch.optim.SGD(p, lr=0.1),
        hparams={
            "guide": "trajectory",
            "tap_layers": "layers",
            "guides": {"trajectory": TrajectoryGuide(lambda p: torch.optim.SGD(p, lr=0.1))},
        },
        run_opts={"noprogressbar": True},
    )
    brain.history, brain.start_callbacks, brain.end_callbacks = [], [], []
    brain.fit(range(1), tiny.loader(tiny.make_batches(2)))
    assert calls["prepare"] == 2  # once per batch, shared by student and teacher
    assert calls["run"] == [True] * 4  # student + teacher per batch
    assert calls["loss"] == [True] * 4  # student + trajectory teacher per batch


def test_taps_record_only_inside_the_brains_forward(tiny):
    teacher = tiny.TinyEncoder()
    student = tiny.make_student(teacher)
    first = tiny.build_brain("target", teacher, student)
    second = tiny.build_brain("target", teacher, student)
    second.fit(range(1), tiny.loader(tiny.make_batches(2)))
    x, lengths, _ = tiny.make_batches(1)[0]
    student(x, lengths), teacher(x, lengths)  # plain forward passes, e.g. evaluation
    for brain in (first, second):
        assert brain.student_taps.states == [] and brain.teacher_taps.states == []
    assert set(second.history[-1]["terms"]) == {"task", "layer", "logits"}


def test_tap_embeddings_distils_the_first_layers_input_too(tiny):
    """tap_embeddings: L + 1 states per network; the layer term is the GLUE reference's
    raw MSE summed over them (equal to a computation by hand on the same states)."""
    teacher = tiny.TinyEncoder().eval()
    student = tiny.make_student(teacher)
    with torch.no_grad():
        student.inp.weight.add_(0.1)  # the embedding-level states differ too
    hp = {"tap_embeddings": True, "alpha_logits": 0.0,
          "layer_loss": {"layer_norm": False, "layer_reduction": "sum"}, "teacher_train_mode": False}
    brain = tiny.build_brain("target", teacher, student, hparams=hp)
    x, lengths, y = tiny.make_batches(1)[0]
    with torch.no_grad():
        brain.modules.eval()
        pred = brain.compute_forward((x, lengths, y), sb.Stage.TRAIN)
        terms = brain.compute_objectives(pred, (x, lengths, y), sb.Stage.TRAIN)
    assert len(pred.student.states) == len(pred.teacher.states) == 3
    mask = lengths_to_mask(lengths, x.shape[1])[..., None]
    expected = 0.0
    with torch.no_grad():
        hs, ht = student.inp(x) * mask, teacher.inp(x) * mask
        for i in range(3):
            expected += float(((hs - ht) ** 2).mean(-1)[mask[..., 0]].mean())
            if i < 2:
                hs, ht = student.layers[i](hs) * mask, teacher.layers[i](ht) * mask
    assert abs(brain.last_terms["layer"] - expected) < 1e-5 * max(1.0, expected)
    assert torch.isfinite(terms)


def test_optimizer_step_limit_from_the_command_line_is_a_number(tiny):
    """SpeechBrain 1.1 parses --optimizer_step_limit=2 as the string "2": training still stops after 2 steps."""
    brain = tiny.build_brain("target", run_opts={"optimizer_step_limit": "2"})
    assert brain.optimizer_step_limit == 2
    brain.fit(range(1), tiny.loader(tiny.make_batches(4)))
    assert brain.optimizer_step == 2 and len(brain.history) == 2 and brain.planned_steps == 2
    with pytest.raises(ValueError, match="optimizer_step_limit: expected a whole number of optimizer steps, found 'two'"):
        tiny.build_brain("target", run_opts={"optimizer_step_limit": "two"})


class _SkippingEncoder(torch.nn.Module):
    """A TinyEncoder whose layer ``skip`` does not run in training mode (what LayerDrop does at random)."""

    def __init__(self, encoder, skip):
        super().__init__()
        self.inp, self.layers, self.head, self.skip = encoder.inp, encoder.layers, encoder.head, skip

    def forward(self, x, lengths):
        mask = lengths_to_mask(lengths, x.shape[1], x.shape[0])[..., None]
        h = self.inp(x) * mask
        for i, layer in enumerate(self.layers):
            if not (self.training and i == self.skip):
                h = layer(h) * mask
        return self.head(h)


@pytest.mark.parametrize("who", ["teacher", "student"])
def test_a_layer_that_did_not_run_stops_layer_distillation(tiny, who):
    """A skipped layer would pair student layer i with teacher layer i + 1: an error naming both counts."""
    teacher = tiny.TinyEncoder()
    student = tiny.make_student(teacher)
    if who == "teacher":
        teacher = _SkippingEncoder(teacher, skip=0)
    else:
        student = _SkippingEncoder(student, skip=0)
    brain = tiny.build_brain("target", teacher, student)
    counts = "the teacher recorded 1 layer states, the student 2" if who == "teacher" else \
        "the teacher recorded 2 layer states, the student 1"
    with pytest.raises(RuntimeError, match=rf"step 0: {counts}, but the student expects 2 teacher states and 2 of "
                                           r"its own .*LayerDrop; set `layerdrop: 0.0`"):
        brain.fit(range(1), tiny.loader(tiny.make_batches(1)))
    if who == "teacher":  # the same teacher in eval mode runs every layer: distillation goes on
        brain = tiny.build_brain("target", teacher, student, hparams={"teacher_train_mode": False})
        brain.fit(range(1), tiny.loader(tiny.make_batches(1)))
        assert "layer" in brain.history[-1]["terms"]


def test_a_layerdrop_wav2vec2_teacher_is_refused(tmp_path):
    """transformers' LayerDrop skips whole layers in training mode: the check names it."""
    from speechbrain_cald.distill import DistillBrain, ModelOutput
    from speechbrain_cald.lobes.hf_speech import CTCModel, HFSpeechEncoder
    from speechbrain_cald.testing.speech import save_tiny_speech_model

    folder = save_tiny_speech_model(str(tmp_path / "w2v"))
    teacher = CTCModel(HFSpeechEncoder(folder, config_overrides={"layerdrop": 1.0}), n_tokens=5)
    student = CTCModel(HFSpeechEncoder(folder, config_overrides={"layerdrop": 0.0}), n_tokens=5)

    class Speech(DistillBrain):
        def run_model(self, model, batch, stage):
            return ModelOutput(*model(*batch))

        def task_loss(self, output, batch, stage):
            return output.logits.mean()

    brain = Speech(modules={"model": student, "teacher": teacher}, hparams={"guide": "target"},
                   run_opts={"noprogressbar": True})
    with pytest.raises(RuntimeError, match=r"the teacher recorded 0 layer states, the student 2.*`layerdrop: 0.0`"):
        brain.compute_forward((torch.randn(2, 4000), torch.ones(2)), sb.Stage.TRAIN)
    brain = Speech(modules={"model": student, "teacher": teacher}, hparams={"guide": "target", "alpha_layer": 0.0,
                                                                           "alpha_logits": 1.0},
                   run_opts={"noprogressbar": True})
    brain.compute_forward((torch.randn(2, 4000), torch.ones(2)), sb.Stage.TRAIN)  # no layer loss: no check
