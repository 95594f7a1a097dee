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
    assert moved == [False, True, False, True, False]  # (t + 1) % 2 == 0: steps 1 and 3, as the reference
    assert brain.guide.teacher_updates == 2
    assert "2 teacher updates" in brain.guide.describe(5)


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


def test_hybrid_drops_the_layer_term_at_the_switch_and_keeps_the_logits_term(tiny):
    # the CALD speech reference: alpha_layer 0 after the switch, alpha_logits (TED-LIUM: 1) kept
    brain = tiny.build_brain("hybrid", hparams={"guides": {"hybrid": HybridGuide(switch_fraction=0.5)}})
    brain.fit(range(2), tiny.loader(tiny.make_batches(3)))  # 6 planned steps -> switch at 3
    assert brain.guide.switch_step == 3
    terms = [sorted(set(h["terms"]) - {"task"}) for h in brain.history]
    assert terms == [["layer", "logits"]] * 3 + [["logits"]] * 3
    assert brain.history[-1]["teacher"].startswith("target without the layer term (hybrid")
    assert brain.guide.state_dict()["switched"]


@pytest.mark.parametrize("hybrid, alpha_logits", [(HybridGuide(switch_step=2, drop="all"), 0.5), (HybridGuide(switch_step=2), 0.0)])
def test_hybrid_after_the_switch_without_any_term_runs_no_teacher(tiny, hybrid, alpha_logits):
    teacher = tiny.TinyEncoder()
    brain = tiny.build_brain("hybrid", teacher, hparams={"guides": {"hybrid": hybrid}, "alpha_logits": alpha_logits})
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(brain.optimizer_step))
    brain.fit(range(1), tiny.loader(tiny.make_batches(4)))
    assert calls == [0, 1]
    assert [set(h["terms"]) for h in brain.history][2:] == [{"task"}, {"task"}]


def test_training_ending_between_snapshots_saves_the_final_model_as_last_waypoint(tiny, tmp_path):
    snaps = tmp_path / "snapshots"
    run = tiny.build_brain(
        "unguided", student=tiny.TinyEncoder(), hparams={"snapshot_interval": 4, "snapshot_dir": str(snaps)}
    )
    run.fit(range(1), tiny.loader(tiny.make_batches(6)))
    assert [s for s, _ in list_snapshots(snaps)] == [4, 6]  # 6 is not a multiple of 4: saved at the end
    assert same(params(run.modules.model), torch.load(list_snapshots(snaps)[-1][1]))


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


def test_trajectory_teacher_follows_the_students_schedule_at_its_own_lr(tiny):
    """The reference: same scheduler type, warm-up and total for both, teacher_lr as the teacher's peak."""
    from speechbrain.nnet.schedulers import NoamScheduler

    guide = TrajectoryGuide(functools.partial(torch.optim.AdamW, lr=3e-5, weight_decay=0.0), teacher_update_cycle=1)
    brain = tiny.build_brain(
        "trajectory",
        hparams={"guides": {"trajectory": guide}, "lr_scheduler": NoamScheduler(lr_initial=0.05, n_warmup_steps=3)},
    )
    lrs = []
    brain.start_callbacks.append(
        lambda b: lrs.append((b.optimizer.param_groups[0]["lr"], b.guide.optimizer.param_groups[0]["lr"]))
    )
    brain.fit(range(1), tiny.loader(tiny.make_batches(6)))
    student, teacher = zip(*lrs)
    assert len(set(student)) > 2  # warm-up then decay
    assert [t / s for s, t in zip(student, teacher)] == pytest.approx([3e-5 / 0.05] * 6, rel=1e-6)


def test_trajectory_schedule_runs_per_teacher_update(tiny):
    """With T_u = 2 the teacher's schedule advances once per update, as the reference's teacher scheduler."""
    from speechbrain.nnet.schedulers import NoamScheduler

    guide = TrajectoryGuide(functools.partial(torch.optim.SGD, lr=1.0), teacher_update_cycle=2)
    brain = tiny.build_brain(
        "trajectory",
        hparams={"guides": {"trajectory": guide}, "lr_scheduler": NoamScheduler(lr_initial=0.05, n_warmup_steps=4)},
    )
    brain.fit(range(1), tiny.loader(tiny.make_batches(6)))
    reference = NoamScheduler(lr_initial=1.0, n_warmup_steps=4)
    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    for _ in range(3):  # steps 1, 3, 5 updated the teacher
        reference(probe)
    assert guide.teacher_updates == 3
    assert guide.optimizer.param_groups[0]["lr"] == pytest.approx(probe.param_groups[0]["lr"], rel=1e-6)


def test_trajectory_schedule_is_restored_from_a_checkpoint(tmp_path):
    from speechbrain.nnet.schedulers import NoamScheduler

    def make():
        guide = TrajectoryGuide(functools.partial(torch.optim.SGD, lr=2.0))
        guide.bind(torch.nn.Linear(2, 2))
        guide.make_optimizer(NoamScheduler(lr_initial=0.1, n_warmup_steps=5), 0.1)
        return guide

    guide = make()
    for _ in range(4):
        guide.optimizer.step()
        guide.after_teacher_step()
    guide._save(tmp_path / "g.ckpt")
    other = make()
    other._load(tmp_path / "g.ckpt", end_of_epoch=False)
    assert other.optimizer.param_groups[0]["lr"] == pytest.approx(guide.optimizer.param_groups[0]["lr"])
    guide.after_teacher_step(), other.after_teacher_step()
    assert other.optimizer.param_groups[0]["lr"] == pytest.approx(guide.optimizer.param_groups[0]["lr"])


def test_waypoint_spread_over_the_students_run_logs_each_switch(tiny, tmp_path, caplog):
    """The NLP reference: n snapshots over S student steps, waypoint floor(t n / S)."""
    from speechbrain_cald.distill import save_snapshot

    snaps = tmp_path / "snapshots"
    for step in (0, 100, 200, 300):  # a teacher that ran 300 steps; step 0 is no waypoint
        save_snapshot(tiny.TinyEncoder(), snaps, step)
    guide = WaypointGuide(snaps, schedule="spread")
    brain = tiny.build_brain("waypoint", hparams={"guides": {"waypoint": guide}})
    with caplog.at_level("INFO"):
        brain.fit(range(1), tiny.loader(tiny.make_batches(6)))  # a student of 6 steps
    assert [h["teacher"] for h in brain.history] == [f"waypoint step_{s:08d}" for s in (100, 100, 200, 200, 300, 300)]
    switches = [r.getMessage() for r in caplog.records if "waypoint guide" in r.getMessage()]
    assert len(switches) == 3 and "waypoint 2 of 3" in switches[1] and "from student step 2" in switches[1]
    # the speech reference's rule on the same snapshots: a 6-step student never leaves the first
    rule = WaypointGuide(snaps)
    assert {rule.waypoint_for(t) for t in range(6)} == {100}
    with pytest.raises(ValueError, match="planned number"):
        WaypointGuide(snaps, schedule="spread").on_fit_start(None)
    with pytest.raises(ValueError, match="schedule should be one of"):
        WaypointGuide(snaps, schedule="even")
