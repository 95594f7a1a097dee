"""Atomic checkpoints, guide state round trips, snapshots."""

import functools
import os

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer, mark_as_loader, mark_as_saver, register_checkpoint_hooks
from torch import nn

from speechbrain_cald.distill import (
    AtomicCheckpointer,
    HybridGuide,
    TargetGuide,
    TrajectoryGuide,
    WaypointGuide,
    list_snapshots,
    make_atomic,
    save_snapshot,
)


@register_checkpoint_hooks
class Exploding:
    """A recoverable whose saver dies (as a killed process would) when armed."""

    def __init__(self):
        self.armed = False
        self.value = 0

    @mark_as_saver
    def _save(self, path):
        if self.armed:
            raise KeyboardInterrupt("killed while saving")
        torch.save(self.value, path)

    @mark_as_loader
    def _load(self, path, end_of_epoch):
        self.value = torch.load(path)


@pytest.mark.parametrize("make", [AtomicCheckpointer, lambda d, r: make_atomic(Checkpointer(d, r))])
def test_a_save_killed_midway_leaves_no_checkpoint(tmp_path, make):
    lin, bomb = nn.Linear(2, 2), Exploding()
    # "a" sorts before "bomb": the model file is written before the kill.
    ckpt = make(tmp_path, {"a_lin": lin, "bomb": bomb})
    bomb.value = 1
    first = ckpt.save_checkpoint(name="first")
    bomb.armed, bomb.value = True, 2
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(name="second")
    assert [c.path for c in ckpt.list_checkpoints()] == [first.path]
    bomb.armed, bomb.value = False, 0
    ckpt.recover_if_possible()
    assert bomb.value == 1
    # Saving the same name again replaces the leftover temporary directory.
    assert ckpt.save_checkpoint(name="second").path.name == "CKPT+second"
    assert sorted(os.listdir(tmp_path)) == ["CKPT+first", "CKPT+second"]


def test_plain_speechbrain_checkpointer_is_not_atomic(tmp_path):
    """Why AtomicCheckpointer exists: SpeechBrain 1.1 lists a half-written checkpoint."""
    bomb = Exploding()
    ckpt = Checkpointer(tmp_path, {"bomb": bomb})
    bomb.armed = True
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(name="broken")
    assert len(ckpt.list_checkpoints()) == 1


def test_trajectory_state_round_trip(tmp_path):
    sched = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    guide = TrajectoryGuide(functools.partial(torch.optim.Adam, lr=0.1), 2, sched)
    teacher = nn.Linear(3, 3)
    guide.bind(teacher)
    guide.make_optimizer()
    teacher(torch.randn(4, 3)).sum().backward()
    guide.optimizer.step()
    guide.after_teacher_step()
    guide._save(tmp_path / "g.ckpt")

    other = TrajectoryGuide(functools.partial(torch.optim.Adam, lr=0.1), 2, sched)
    other_teacher = nn.Linear(3, 3)
    other.bind(other_teacher)
    other.make_optimizer()
    other._load(tmp_path / "g.ckpt", end_of_epoch=False)
    assert torch.equal(other_teacher.weight, teacher.weight)
    assert other.teacher_updates == 1
    assert other.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    exp_avg = guide.optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(other.optimizer.state_dict()["state"][0]["exp_avg"], exp_avg)


def test_guide_states_are_checked_on_load(tmp_path):
    hybrid = HybridGuide(switch_step=3)
    hybrid.bind(nn.Linear(2, 2))
    hybrid.teacher_active(5)
    hybrid._save(tmp_path / "h.ckpt")
    restored = HybridGuide(switch_step=3)
    restored._load(tmp_path / "h.ckpt", True)
    assert restored.switched
    with pytest.raises(ValueError, match="switches at step 3, this run at step 4"):
        HybridGuide(switch_step=4)._load(tmp_path / "h.ckpt", True)
    with pytest.raises(ValueError, match="guide 'hybrid'.*guide 'target'"):
        TargetGuide()._load(tmp_path / "h.ckpt", True)


def test_waypoint_reloads_its_snapshot_after_recovery(tmp_path):
    teacher = nn.Linear(2, 2)
    save_snapshot(teacher, tmp_path / "s", 5)
    with torch.no_grad():
        teacher.weight.add_(1.0)
    guide = WaypointGuide(tmp_path / "s")
    guide.bind(teacher)
    guide.prepare_teacher(0)
    guide._save(tmp_path / "w.ckpt")
    with torch.no_grad():
        teacher.weight.zero_()
    guide._load(tmp_path / "w.ckpt", False)
    guide.prepare_teacher(0)
    assert torch.equal(teacher.weight, torch.load(list_snapshots(tmp_path / "s")[0][1])["weight"])


def test_snapshots_ignore_temporary_files(tmp_path):
    save_snapshot(nn.Linear(2, 2), tmp_path, 10)
    (tmp_path / ".tmp-step_00000020.ckpt").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("x")
    assert [s for s, _ in list_snapshots(tmp_path)] == [10]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no step_"):
        list_snapshots(tmp_path / "empty")
