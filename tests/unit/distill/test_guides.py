"""Each guide inside DistillBrain: loss terms per step, which weights move, switches."""

import copy
import functools

import pytest
import torch
from speechbrain.utils.epoch_loop import EpochCounter

from speechbrain_cald.distill import (
    GUIDES,
    HybridGuide,
    TrajectoryGuide,
    WaypointGuide,
    layer_distill_loss,
    list_snapshots,
    select_guide,
)
from speechbrain_cald.distill.taps import LayerTaps, lengths_to_mask
from float_tolerance import REDUCTION, assert_close


def params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def trajectory(cycle=1, lr=0.1):
    return TrajectoryGuide(functools.partial(torch.optim.SGD, lr=lr), teacher_update_cycle=cycle)


EXPECTED_TERMS = {
    "unguided": {"task"},
    "target": {"task", "layer", "logits"},
    "trajectory": {"task", "layer", "logits", "teacher_task"},
    "hybrid": {"task", "layer", "logits"},
}


@pytest.mark.parametrize("name", ["unguided", "target", "trajectory", "hybrid"])
def test_each_guide_gives_its_loss_terms_and_moves_the_right_weights(tiny, name):
    guides = {"trajectory": trajectory(), "hybrid": HybridGuide(switch_step=100)}
    teacher = tiny.TinyEncoder()
    student = tiny.make_student(teacher)
    before_t, before_s = params(teacher), params(student)
    brain = tiny.build_brain(name, teacher, student, hparams={"guides": guides})
    brain.fit(range(1), tiny.loader(tiny.make_batches(3)))
    assert [h["step"] for h in brain.history] == [0, 1, 2]
    for h in brain.history:
        assert set(h["terms"]) == EXPECTED_TERMS[name]
        assert all(v == v and v >= 0 for v in h["terms"].values())
    assert not same(before_s, params(student))
    assert same(before_t, params(teacher)) == (name != "trajectory")


def test_trajectory_teacher_updates_every_cycle_on_the_same_batch(tiny):
    teacher = tiny.TinyEncoder(dropout=0.0)
    student = tiny.make_student(teacher)
    brain = tiny.build_brain("trajectory", teacher, student, hparams={"guides": {"trajectory": trajectory(cycle=2)}})
    seen = []
    brain.start_callbacks.append(lambda b: seen.append(params(teacher)))
    brain.fit(range(1), tiny.loader(tiny.make_batches(5)))
    seen.append(params(teacher))
    moved = [not same(seen[i], seen[i + 1]) for i in range(5)]
    assert moved == [True, False, True, False, True]  # steps 0, 2, 4
    assert brain.guide.teacher_updates == 3
    assert "3 teacher updates" in brain.guide.describe(5)


def test_trajectory_student_distils_states_from_before_the_teacher_update(tiny):
    teacher = tiny.TinyEncoder(dropout=0.0)
    student = tiny.make_student(teacher)
    t0, s0 = copy.deepcopy(teacher), copy.deepcopy(student)
    batches = tiny.make_batches(1)
    brain = tiny.build_brain(
        "trajectory", teacher, student, hparams={"guides": {"trajectory": trajectory(lr=1.0)}, "alpha_logits": 0.0}
    )
    brain.fit(range(1), tiny.loader(batches))
    x, lengths, _ = batches[0]
    taps_t, taps_s = LayerTaps(t0.layers), LayerTaps(s0.layers)
    with torch.no_grad():
        t0(x, lengths), s0(x, lengths)
    expected = layer_distill_loss(taps_s.states, taps_t.states, lengths_to_mask(lengths, x.shape[1]))
    assert_close(brain.history[0]["terms"]["layer"], expected.item(), factor=REDUCTION, dtype=torch.float32)
    assert not same(params(t0), params(teacher))  # the teacher did move afterwards


def test_grad_accumulation_counts_optimizer_steps(tiny):
    teacher = tiny.TinyEncoder()
    brain = tiny.build_brain(
        "trajectory",
        teacher,
        hparams={"guides": {"trajectory": trajectory(cycle=1)}},
        run_opts={"grad_accumulation_factor": 2},
    )
    brain.fit(range(1), tiny.loader(tiny.make_batches(4)))
    assert brain.optimizer_step == 2
    assert [h["step"] for h in brain.history] == [0, 0, 1, 1]
    assert brain.guide.teacher_updates == 2


def test_hybrid_stops_distilling_at_the_switch(tiny):
    brain = tiny.build_brain("hybrid", hparams={"guides": {"hybrid": HybridGuide(switch_fraction=0.5)}})
    brain.fit(range(2), tiny.loader(tiny.make_batches(3)))  # 6 planned steps -> switch at 3
    assert brain.guide.switch_step == 3
    has_layer = [("layer" in h["terms"], h["step"]) for h in brain.history]
    assert has_layer == [(True, 0), (True, 1), (True, 2), (False, 3), (False, 4), (False, 5)]
    assert brain.history[-1]["teacher"].startswith("none (hybrid")
    assert brain.guide.state_dict()["switched"]


def test_teacher_finetuning_snapshots_then_waypoint_switches(tiny, tmp_path):
    snaps = tmp_path / "snapshots"
    teacher_run = tiny.build_brain(
        "unguided", student=tiny.TinyEncoder(), hparams={"snapshot_interval": 2, "snapshot_dir": str(snaps)}
    )
    teacher_run.fit(range(1), tiny.loader(tiny.make_batches(6)))
    assert [s for s, _ in list_snapshots(snaps)] == [2, 4, 6]
    assert set(teacher_run.history[0]["terms"]) == {"task"}
    final = params(teacher_run.modules.model)
    assert same(final, torch.load(list_snapshots(snaps)[-1][1]))

    teacher = tiny.TinyEncoder()
    student = tiny.make_student(teacher)
    brain = tiny.build_brain("waypoint", teacher, student, hparams={"guides": {"waypoint": WaypointGuide(snaps)}})
    loaded = {}
    brain.end_callbacks.append(lambda b, step: loaded.__setitem__(step, params(teacher)))
    brain.fit(range(1), tiny.loader(tiny.make_batches(8)))
    waypoints = (2, 2, 4, 4, 6, 6, 6, 6)
    assert [h["teacher"] for h in brain.history] == [f"waypoint step_{s:08d}" for s in waypoints]
    snapshot_of = dict(list_snapshots(snaps))
    for step, waypoint in enumerate(waypoints):  # the weights the teacher ran with at that step
        assert same(loaded[step], torch.load(snapshot_of[waypoint]))
    assert same(params(teacher), final)
    assert set(brain.history[0]["terms"]) == {"task", "layer", "logits"}


def test_teacher_train_mode_is_a_choice(tiny):
    for mode in (True, False):
        teacher = tiny.TinyEncoder()
        brain = tiny.build_brain("target", teacher, hparams={"teacher_train_mode": mode})
        seen = []
        teacher.layers[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
        brain.fit(range(1), tiny.loader(tiny.make_batches(2)))
        assert seen == [mode, mode]


def test_nan_loss_stops_with_a_clear_error(tiny):
    brain = tiny.build_brain("target", run_opts={"nonfinite_patience": 1})
    batches = tiny.make_batches(3)
    batches = [(x * float("nan"), n, y) for x, n, y in batches]
    with pytest.raises(ValueError, match="had a non-finite loss or gradient"):
        brain.fit(range(1), tiny.loader(batches))


def test_debug_mode_runs_a_few_batches(tiny):
    brain = tiny.build_brain("target", run_opts={"debug": True, "debug_batches": 2, "debug_epochs": 2})
    brain.fit(EpochCounter(5), tiny.loader(tiny.make_batches(4)))
    assert [h["step"] for h in brain.history] == [0, 1, 2, 3]  # 2 epochs of 2 batches


def test_guide_selection_and_configuration_errors(tiny, tmp_path):
    assert set(GUIDES) == {"unguided", "target", "trajectory", "waypoint", "hybrid"}
    assert isinstance(select_guide(None), GUIDES["unguided"])
    with pytest.raises(TypeError, match=r"guides\[target\]"):
        select_guide("target", {"target": HybridGuide(switch_step=1)})
    with pytest.raises(ValueError, match="both are null"):
        HybridGuide().on_fit_start(10)  # built fine (all.yaml builds every guide), fails at start
    step_wins = HybridGuide(switch_step=2, switch_fraction=0.5)
    step_wins.on_fit_start(10)
    assert step_wins.switch_step == 2
    with pytest.raises(ValueError, match="planned number"):
        HybridGuide(switch_fraction=0.5).on_fit_start(None)
    with pytest.raises(KeyError, match="needs a teacher"):
        tiny.ToyBrain(modules={"model": tiny.TinyEncoder()}, hparams={"guide": "target"})
    with pytest.raises(FileNotFoundError, match="snapshot_dir"):
        WaypointGuide(tmp_path / "missing").waypoint_for(0)
    with pytest.raises(ValueError, match="snapshot_dir"):
        tiny.build_brain("unguided", hparams={"snapshot_interval": 2})


def test_zero_alphas_skip_a_frozen_teacher_but_not_a_learning_one(tiny):
    zero = {"alpha_layer": 0.0, "alpha_logits": 0.0}
    teacher = tiny.TinyEncoder()
    brain = tiny.build_brain("target", teacher, hparams=zero)
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    brain.fit(range(1), tiny.loader(tiny.make_batches(2)))
    assert calls == [] and set(brain.history[0]["terms"]) == {"task"}
    brain = tiny.build_brain("trajectory", hparams={**zero, "guides": {"trajectory": trajectory()}})
    brain.fit(range(1), tiny.loader(tiny.make_batches(2)))
    assert set(brain.history[0]["terms"]) == {"task", "teacher_task"}
