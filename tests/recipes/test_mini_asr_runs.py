"""The mini recipe's train.py as runs collide, are killed, or scale out (issue 16).

- two runs into one output folder: the second refuses at once, naming the folder;
- a run killed while a checkpoint is written, mid-epoch and during validation,
  resumed each time, ends with exactly the weights of an uninterrupted run;
- ``torchrun --nproc_per_node=2`` (CPU, gloo) trains a student: both ranks finish,
  the main process exports one model; a bad manifest stops both ranks with the report.

Tiny models on the noise corpus of conftest.py; a wrapper script stops or kills
train.py at a chosen moment (the recipe itself has no test hooks).
"""

import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

WRAPPER = textwrap.dedent('''\
    """python wrapper.py ACTION N train.py ARGS...: run train.py, ACTION at the N-th event.

    kill-save: SIGKILL in the middle of the N-th checkpoint save (after its first file);
    kill-batch: SIGKILL after the N-th training batch; kill-valid: SIGKILL in the N-th
    validation batch; pause: after taking the output folder, wait for the file N.
    """
    import os, runpy, signal, sys, time
    action, arg = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[3:]  # train.py ARGS...
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    count = {"n": 0}

    def at_nth(fn):
        def wrapped(*a, **k):
            count["n"] += 1
            if count["n"] == int(arg) and action != "kill-batch":
                die()
            out = fn(*a, **k)
            if count["n"] == int(arg) and action == "kill-batch":
                die()
            return out
        return wrapped

    from speechbrain_cald.distill import DistillBrain
    if action == "kill-batch":
        DistillBrain.fit_batch = at_nth(DistillBrain.fit_batch)
    elif action == "kill-valid":
        DistillBrain.evaluate_batch = at_nth(DistillBrain.evaluate_batch)
    elif action == "kill-save":
        import torch
        from speechbrain_cald.distill.checkpoint import AtomicCheckpointer
        save, ckpt_save, inside = torch.save, AtomicCheckpointer.save_checkpoint, {"on": False}
        def save_file(*a, **k):
            save(*a, **k)
            if inside["on"]:
                die()  # one file of the checkpoint is on disk, the rest is not
        def save_checkpoint(self, *a, **k):
            count["n"] += 1
            inside["on"] = count["n"] == int(arg)
            return ckpt_save(self, *a, **k)
        torch.save, AtomicCheckpointer.save_checkpoint = save_file, save_checkpoint
    elif action == "pause":
        fit = DistillBrain.fit
        def paused_fit(self, *a, **k):
            print("PAUSED", flush=True)
            while not os.path.exists(arg):
                time.sleep(0.1)
            return fit(self, *a, **k)
        DistillBrain.fit = paused_fit
    runpy.run_path("train.py", run_name="__main__")
''')

TWO_EPOCHS = ["--number_of_epochs=2", "--dropout=0.1"]  # dropout: the RNG state must resume too


@pytest.fixture
def wrapper(tmp_path):
    path = tmp_path / "wrapper.py"
    path.write_text(WRAPPER)
    return [sys.executable, str(path)]


def _weights(folder):
    return torch.load(folder / "model.ckpt", map_location="cpu")


def test_a_second_run_into_the_same_folder_refuses(noise_corpus, tmp_path, mini, wrapper):
    out, go = tmp_path / "out", tmp_path / "go"
    cmd = [*wrapper, "pause", str(go), *mini.train_args("mini_teacher.yaml", noise_corpus, out)]
    first = subprocess.Popen(cmd, cwd=mini.MINI_ASR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=mini.recipe_env())
    try:
        seen = []
        for line in first.stdout:  # the first run holds the folder and waits
            seen.append(line)
            if "PAUSED" in line:
                break
        assert "PAUSED" in seen[-1], "".join(seen)[-3000:]
        second = mini.run_train("mini_teacher.yaml", noise_corpus, out)
        assert second.returncode != 0
        text = second.stdout + second.stderr
        assert f"OutputFolderInUse: output folder {out} is in use by another run (pid {first.pid} on" in text
        assert "mini_teacher.yaml" in text  # the holder's command
    finally:
        go.touch()
        rest = first.communicate(timeout=240)[0]
    assert first.returncode == 0, rest[-3000:]
    assert (out / "model.ckpt").exists() and len(list((out / "save").glob("CKPT*"))) == 1


@pytest.mark.slow  # ~35 s on 2 quiet cores
def test_killed_anywhere_and_resumed_ends_with_the_uninterrupted_weights(noise_corpus, tiny_teacher, tmp_path, mini,
                                                                         wrapper):
    whole = tmp_path / "whole"
    proc = mini.run_train("mini_mamba.yaml", noise_corpus, whole, *TWO_EPOCHS, teacher=tiny_teacher)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    resumed = tmp_path / "resumed"
    args = mini.train_args("mini_mamba.yaml", noise_corpus, resumed, *TWO_EPOCHS, teacher=tiny_teacher)
    for action, n in (("kill-save", 1),     # epoch 1's checkpoint half written: a .tmp-CKPT folder is left
                      ("kill-batch", 6),    # from scratch again; killed mid epoch 2 (4 batches an epoch)
                      ("kill-valid", 1)):   # from epoch 1's checkpoint; killed validating epoch 2
        killed = subprocess.run([*wrapper, action, str(n), *args], cwd=mini.MINI_ASR, capture_output=True, text=True,
                                timeout=240, env=mini.recipe_env())
        assert killed.returncode == -9, (action, killed.stdout[-2000:], killed.stderr[-2000:])
        assert not (resumed / "model.ckpt").exists()
    assert list((resumed / "save").glob("CKPT*")), "epoch 1's checkpoint should exist by now"
    proc = mini.run_train("mini_mamba.yaml", noise_corpus, resumed, *TWO_EPOCHS, teacher=tiny_teacher)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    a, b = _weights(whole), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed != uninterrupted"
    assert not list((resumed / "save").glob(".tmp-*"))
    assert len(list((resumed / "save").glob("CKPT*"))) == len(list((whole / "save").glob("CKPT*")))
    log = (resumed / "train_log.txt").read_text()
    assert log.count("resumed from checkpoint") == 2 and log.count("epoch: 2,") == 1


@pytest.mark.slow  # ~35 s on 2 quiet cores
def test_torchrun_two_processes_train_and_export_one_model(noise_corpus, tiny_teacher, tmp_path, mini):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    # a bad manifest: the main process checks, both ranks stop with the report (no hang)
    bad = mini.copy_corpus(noise_corpus, tmp_path / "bad")
    mini.edit_manifest(bad / "valid.csv", "valid_001", wav="$data_root/wav/valid/missing.wav")
    proc = mini.run_train("mini_mamba.yaml", bad, tmp_path / "bad_out", teacher=tiny_teacher, launcher=launcher)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert text.count("ManifestError: 1 of 10 manifest rows are unusable") == 2, text[-4000:]  # rank 0 and rank 1

    out = tmp_path / "ddp"
    proc = mini.run_train("mini_mamba.yaml", noise_corpus, out, "--train_utts=8", teacher=tiny_teacher,
                          launcher=launcher)  # train_utts: the line each rank prints once it has its data
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert "distributed_backend gloo" in text
    assert text.count("training on the first 8 utterances") == 2  # both ranks ran train.py to the end
    assert text.count("best model (WER) ->") == 1  # one export, by the main process
    weights = _weights(out)
    assert weights and all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert "step 2 |" in (out / "log.txt").read_text()  # 4 batches an epoch, 2 per rank


def test_a_rerun_with_other_options_leaves_the_finished_folder_as_it_was(noise_corpus, tiny_teacher, tmp_path, mini,
                                                                         recipe_module):
    """Issue 24: another architecture rewrote hyperparams.yaml, then failed (model.ckpt no longer loaded at
    stage 4); another --lr "resumed" and recorded a rate the model was not trained with."""
    import shutil

    folder = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, folder)
    files = lambda: {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}  # noqa: E731
    before = files()
    for option, named in (("--d_model=48", "`d_model` 32 there, 48 now"), ("--lr=0.005", "`lr` 0.0015 there, 0.005 now")):
        proc = mini.run_train("mini_teacher.yaml", noise_corpus, folder, "--snapshot_interval=1", option)
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0 and f"OptionsDiffer: {folder} holds a run trained with other options" in text, text
        assert named in text and "--overwrite" in text
        assert files() == before  # the lock file included: emptied by the run that finished, untouched since
    hp, model = recipe_module("evaluate").load_model(str(folder))  # stage 4 still loads it
    assert hp.d_model == 32 and hp.lr == 0.0015

    proc = mini.run_train("mini_teacher.yaml", noise_corpus, folder, "--snapshot_interval=1", "--lr=0.005",
                          "--overwrite")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    hp, model = recipe_module("evaluate").load_model(str(folder))
    assert hp.lr == 0.005 and (folder / "model.ckpt").read_bytes() != before[folder / "model.ckpt"]
