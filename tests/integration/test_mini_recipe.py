"""Smoke test of the whole mini ASR recipe (stages 0-4) on a handful of utterances.

SpeechBrain ``--debug`` style: a tiny corpus, one short epoch per model, every
stage run for real (espeak-ng synthesis, units and word LM, teacher with
snapshots, the BiMamba2 students with the target and unguided guides, the
Linformer, residual and recursive students, greedy and LM-decoded WER on every
test set, speed workers, RESULTS.md and the plot), all in a tmp dir.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "mini" / "ASR"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)"),
]

TINY = [
    "--n_train", "16", "--n_valid", "4", "--n_test", "12", "--longform", "3 5",
    "--teacher_args", "--number_of_epochs=1 --max_batch_length=12 --snapshot_interval=1",
    "--student_args", "--number_of_epochs=1 --max_batch_length=12",
    "--eval_args", "--bench_seconds 1 2 --bench_repeats 1",
]


STUDENT_FOLDERS = ("mini_mamba_target", "mini_mamba_unguided", "mini_linformer_target", "mini_residual_target",
                   "mini_recursive_target")


def run_recipe(tmp_path, *args):
    cmd = ["bash", str(RECIPE / "run.sh"), "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
           "--results_md", str(tmp_path / "RESULTS.md"), *TINY, *args]
    # from another directory: run.sh must not depend on the caller's cwd
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # the venv's python
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, f"run.sh failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out.stdout


def test_whole_recipe_end_to_end(tmp_path):
    log = run_recipe(tmp_path)
    exp = tmp_path / "exp"
    for stage in range(5):
        assert f"== stage {stage}:" in log and "done in" in log
    # stage 2: teacher checkpoint and waypoints (step 0 = the "pretrained" model)
    assert (exp / "teacher" / "model.ckpt").exists()
    snaps = sorted(p.name for p in (exp / "teacher" / "snapshots").glob("step_*.ckpt"))
    assert snaps[0] == "step_00000000.ckpt" and len(snaps) >= 2
    # stage 3: one folder per student and guide
    assert (tmp_path / "data" / "lm_3gram.arpa").exists()
    for name in STUDENT_FOLDERS:
        assert (exp / name / "model.ckpt").exists(), name
        hyps_dirs = list((exp / name / "hyps").glob("data-*"))  # one per data folder evaluated
        assert len(hyps_dirs) == 1, (name, hyps_dirs)
        for hyps in ("test.csv", "test_greedy.csv", "longform.csv"):
            assert (hyps_dirs[0] / hyps).exists(), (name, hyps)
    train_log = (exp / "mini_mamba_target" / "train_log.txt").read_text()
    assert "teacher: target" in train_log and "train layer" in train_log
    assert "train layer" not in (exp / "mini_mamba_unguided" / "train_log.txt").read_text()
    # stage 4: results, plot, summary
    results = (tmp_path / "RESULTS.md").read_text()
    for row in ("| teacher |", "| mamba_target |", "| mamba_unguided |", "| linformer_target |",
                "| residual_target |", "| recursive_target |"):
        assert results.count(row) == 3, row  # LM, greedy and speed tables
    assert (tmp_path / "speed_vs_length.png").stat().st_size > 1000
    assert "Mini ASR recipe: summary" in log and "ms@2s" in log
    # rerun: every stage is skipped, nothing is retrained or re-evaluated
    again = run_recipe(tmp_path)
    assert again.count("skipped, outputs exist") == 2 + 1 + len(STUDENT_FOLDERS) + 1
    assert "running" not in again


def test_guide_override_names_the_run(tmp_path):
    run_recipe(tmp_path, "--stop_stage", "2")
    log = run_recipe(tmp_path, "--stage", "3", "--stop_stage", "3", "--students", "mini_mamba", "--guide", "waypoint")
    assert "CALD student mini_mamba, guide waypoint: running" in log
    train_log = (tmp_path / "exp" / "mini_mamba_waypoint" / "train_log.txt").read_text()
    assert "teacher: waypoint" in train_log
