"""Smoke test of the whole mini ASR recipe (stages 0-4) on a handful of utterances.

SpeechBrain ``--debug`` style: a tiny corpus, one short epoch per model, every
stage run for real (espeak-ng synthesis with the pre-training split, units and
word LM, pre-training, the teacher fine-tuned from it with snapshots, BiMamba2
students under the guides with their own machinery, the recursive student with
MiniALBERT's objective from both shared-layer initialisations, greedy and
LM-decoded WER on every test set, speed workers, RESULTS.md and the plot), all
in a tmp dir.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "mini" / "ASR"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)"),
]

TINY = [
    "--n_train", "16", "--n_valid", "4", "--n_test", "12", "--n_pretrain", "8", "--longform", "3 5",
    "--teacher_args", "--number_of_epochs=1 --max_batch_length=12 --snapshot_interval=1",
    "--student_args", "--number_of_epochs=1 --max_batch_length=12",
    "--eval_args", "--bench_seconds 1 2 --bench_repeats 1",
]

# Stage 3 here: the guides with their own machinery (trajectory teacher, spread waypoints,
# hybrid switch) and both recursive variants (MiniALBERT's objective); the default list's
# other entries (unguided, Linformer, residual) are checked by name below and run in
# tests/integration/test_distill_guides.py and the unit tests.
STUDENTS = ("mini_mamba mini_mamba:trajectory+train_utts=12 mini_mamba:waypoint+train_utts=12 "
            "mini_mamba:hybrid+train_utts=12 mini_recursive mini_recursive+shared_init=random")
STUDENT_FOLDERS = ("mini_mamba_target", "mini_mamba_trajectory_train_utts-12", "mini_mamba_waypoint_train_utts-12",
                   "mini_mamba_hybrid_train_utts-12", "mini_recursive_target", "mini_recursive_target_shared_init-random")


def run_recipe(tmp_path, *args):
    cmd = ["bash", str(RECIPE / "run.sh"), "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
           "--results_md", str(tmp_path / "RESULTS.md"), *TINY, *args]
    # from another directory: run.sh must not depend on the caller's cwd
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # the venv's python
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, f"run.sh failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """Stages 0-2 once: corpus with its pre-training split, units + LM, pre-training, teacher."""
    tmp_path = tmp_path_factory.mktemp("mini")
    return tmp_path, run_recipe(tmp_path, "--stop_stage", "2")


def test_pretraining_then_teacher_fine_tuned_from_it(teacher_run):
    tmp_path, log = teacher_run
    exp = tmp_path / "exp"
    for stage in range(3):
        assert f"== stage {stage}:" in log and "done in" in log
    assert (tmp_path / "data" / "pretrain.csv").exists() and (tmp_path / "data" / "lm_3gram.arpa").exists()
    pretrained = torch.load(exp / "pretrained" / "model.ckpt")
    assert json.loads((exp / "pretrained" / "training.json").read_text())["train_csv"] == "pretrain.csv"
    # the teacher starts from the pretrained model: its step-0 snapshot is that model
    step0 = torch.load(exp / "teacher" / "snapshots" / "step_00000000.ckpt")
    assert all(torch.equal(step0[k], pretrained[k]) for k in pretrained)
    snaps = sorted(p.name for p in (exp / "teacher" / "snapshots").glob("step_*.ckpt"))
    assert len(snaps) >= 2 and (exp / "teacher" / "model.ckpt").exists()


def test_students_and_evaluation_end_to_end(teacher_run):
    tmp_path, _ = teacher_run
    log = run_recipe(tmp_path, "--stage", "3", "--students", STUDENTS)
    exp = tmp_path / "exp"
    for name in STUDENT_FOLDERS:
        assert (exp / name / "model.ckpt").exists(), name
        assert json.loads((exp / name / "training.json").read_text())["optimizer_steps"] > 0, name
        hyps_dirs = list((exp / name / "hyps").glob("data-*"))  # one per data folder evaluated
        assert len(hyps_dirs) == 1, (name, hyps_dirs)
        for hyps in ("test.csv", "test_greedy.csv", "longform.csv"):
            assert (hyps_dirs[0] / hyps).exists(), (name, hyps)
    assert "CALD student mini_recursive, guide target, --shared_init=random: running" in log
    assert "teacher: target" in (exp / "mini_mamba_target" / "train_log.txt").read_text()
    assert "teacher updates" in (exp / "mini_mamba_trajectory_train_utts-12" / "train_log.txt").read_text()
    saw = json.loads((exp / "mini_mamba_waypoint_train_utts-12" / "training.json").read_text())
    assert saw["train_utterances"] == 12 and saw["guide"] == "waypoint"  # the variant's budget
    recursive_log = (exp / "mini_recursive_target" / "train_log.txt").read_text()
    assert "train attention" in recursive_log and "train hidden" in recursive_log and "train layer" not in recursive_log
    # stage 4: the guides table, what each model saw, one speed row per architecture
    results = (tmp_path / "RESULTS.md").read_text()
    for row in ("| teacher |", "| mamba_target |", "| mamba_trajectory+train_utts-12 |",
                "| recursive_target+shared_init-random |"):
        assert results.count(row) >= 3, row  # LM, greedy and training tables
    for guide in ("| target | fine-tuned |", "| trajectory (train_utts = 12) | pretrained |",
                  "| waypoint (train_utts = 12) | pretrained |", "| hybrid (train_utts = 12) | fine-tuned |"):
        assert guide in results, guide
    assert "| pretrained (stage 2) |" in results
    assert "within 10% relative of the teacher" in results
    assert (tmp_path / "speed_vs_length.png").stat().st_size > 1000
    assert "Mini ASR recipe: summary" in log and "ms@2s" in log
    # rerun: every stage is skipped, nothing is retrained or re-evaluated
    again = run_recipe(tmp_path, "--students", STUDENTS)
    assert again.count("skipped, outputs exist") == 1 + 1 + 2 + len(STUDENT_FOLDERS) + 1
    assert "running" not in again


def test_guide_override_names_the_run(teacher_run):
    tmp_path, _ = teacher_run
    log = run_recipe(tmp_path, "--stage", "3", "--stop_stage", "3", "--students", "mini_mamba", "--guide", "unguided")
    assert "CALD student mini_mamba, guide unguided: running" in log
    assert "train layer" not in (tmp_path / "exp" / "mini_mamba_unguided" / "train_log.txt").read_text()


def test_default_students_resolve():
    """Every entry of run.sh's default STUDENTS names a YAML, a guide and (for a variant) a YAML key."""
    text = (RECIPE / "run.sh").read_text()
    entries = re.search(r'^STUDENTS="([^"]*)"', text, re.M).group(1).replace("\\\n", " ").split()
    guides = {"unguided", "target", "trajectory", "waypoint", "hybrid"}
    mamba_guides = set()
    for entry in entries:
        entry, _, variant = entry.partition("+")
        name, _, guide = entry.partition(":")
        yaml_text = (RECIPE / "hparams" / f"{name}.yaml").read_text()
        assert not guide or guide in guides, entry
        if variant:
            assert re.search(rf"^{variant.split('=')[0]}:", yaml_text, re.M), entry
        if name == "mini_mamba":
            mamba_guides.add(guide or re.search(r"^guide: *(\w+)", yaml_text, re.M).group(1))
    assert mamba_guides == guides
