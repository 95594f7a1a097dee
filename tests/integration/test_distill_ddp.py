"""DistillBrain under torchrun: 2 CPU processes (gloo), checkpoints, kill and resume.

Regression test for a deadlock (ranks listing checkpoints before the atomic
rename) and for per-rank RNG states: a run killed mid-training and resumed
must end with the weights of an uninterrupted one, dropout included.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import functools, sys, torch
    from torch import nn
    from speechbrain.utils.checkpoints import Checkpointer
    from speechbrain_cald.experiment import init_distributed
    from speechbrain.utils.epoch_loop import EpochCounter
    from speechbrain_cald.distill import DistillBrain, ModelOutput, TrajectoryGuide

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2)) for _ in range(2)])
            self.head = nn.Linear(4, 3)
        def forward(self, x):
            for layer in self.layers:
                x = torch.tanh(layer(x))
            return self.head(x)

    class Brain(DistillBrain):
        def run_model(self, model, batch, stage):
            return ModelOutput(model(batch[0]))
        def task_loss(self, output, batch, stage):
            return nn.functional.cross_entropy(output.logits.transpose(1, 2), batch[1])
        def on_fit_batch_end(self, batch, outputs, loss, should_step):
            if self.optimizer_step == KILL:
                raise RuntimeError("killed")

    KILL, SAVE = int(sys.argv[1]), sys.argv[2]
    init_distributed({"device": "cpu", "distributed_backend": "gloo"})
    torch.manual_seed(0)
    teacher, student, counter = Net(), Net(), EpochCounter(2)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(2, 5, 4, generator=g), torch.randint(0, 3, (2, 5), generator=g)) for _ in range(8)]
    brain = Brain(
        modules={"model": student, "teacher": teacher},
        opt_class=lambda p: torch.optim.SGD(p, lr=0.1),
        hparams={"guide": "trajectory", "tap_layers": "layers",
                 "guides": {"trajectory": TrajectoryGuide(functools.partial(torch.optim.SGD, lr=0.1), 2)}},
        run_opts={"noprogressbar": True, "distributed_backend": "gloo", "ckpt_interval_steps": 1},
        checkpointer=Checkpointer(SAVE, {"model": student, "counter": counter}),
    )
    # Each process draws its own dropout masks: resuming must give each its own generator back.
    torch.manual_seed(100 + torch.distributed.get_rank())
    brain.fit(counter, data, train_loader_kwargs={"batch_size": None})
    if torch.distributed.get_rank() == 0:
        print("FINAL", repr([float(p.sum()) for p in list(student.parameters()) + list(teacher.parameters())]))
    """
)


def _torchrun(script, kill, save):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(kill), str(save)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)


def _final(proc):
    lines = [line for line in proc.stdout.splitlines() if line.startswith("FINAL")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    return lines[0]


@pytest.mark.slow
def test_ddp_run_killed_and_resumed_matches_uninterrupted(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    whole = _final(_torchrun(script, 99, tmp_path / "whole"))
    killed = _torchrun(script, 5, tmp_path / "resumed")  # 4 batches per rank per epoch: step 5 is mid epoch 2
    assert killed.returncode != 0 and "killed" in killed.stderr
    resumed = _final(_torchrun(script, 99, tmp_path / "resumed"))
    assert resumed == whole
    shutil.rmtree(tmp_path / "whole")


NAN_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    from speechbrain_cald.experiment import init_distributed
    from speechbrain_cald.distill import DistillBrain, ModelOutput

    class Brain(DistillBrain):
        def run_model(self, model, batch, stage):
            return ModelOutput(model(batch[0]))
        def task_loss(self, output, batch, stage):
            return nn.functional.cross_entropy(output.logits.transpose(1, 2), batch[1])

    init_distributed({"device": "cpu", "distributed_backend": "gloo"})
    rank = torch.distributed.get_rank()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(2, 5, 4, generator=g), torch.randint(0, 3, (2, 5), generator=g)) for _ in range(8)]
    if rank == 1:  # one rank's second batch is NaN: both ranks must skip that step (no hang, no NaN)
        data[3] = (data[3][0] * float("nan"), data[3][1])
    brain = Brain(modules={"model": model}, opt_class=lambda p: torch.optim.SGD(p, lr=0.1),
                  hparams={"guide": "unguided"}, run_opts={"noprogressbar": True, "distributed_backend": "gloo"})
    brain.fit(range(1), data, train_loader_kwargs={"batch_size": None})
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    # one file per rank: two processes printing to one pipe can interleave within a line
    with open(f"{sys.argv[2]}/rank{rank}.txt", "w") as f:
        print("RANK", rank, "STEPS", brain.optimizer_step, "FINITE", bool(torch.isfinite(weights).all()),
              "SUM", repr(float(weights.sum())), file=f)
    """
)


@pytest.mark.slow
def test_ddp_nan_on_one_rank_is_skipped_by_all(tmp_path):
    script = tmp_path / "nan.py"
    script.write_text(NAN_SCRIPT)
    proc = _torchrun(script, 0, tmp_path)  # the first extra argument is ignored, the second is the output folder
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [(tmp_path / f"rank{r}.txt").read_text().strip() for r in (0, 1)]
    # 4 batches per rank, one skipped by both; the replicas stay equal and finite
    assert all(" STEPS 3 FINITE True " in line for line in lines), lines
    assert lines[0].split("SUM")[1] == lines[1].split("SUM")[1]
    assert "skipped epoch batch 2 (a batch without IDs): non-finite loss" in proc.stdout + proc.stderr
