"""SLURP/SLU and VoxCeleb1/SpeakerID from ./run.sh, stages 0-4, on tiny corpora in the distributed layouts.

A tiny random wav2vec2 (2 layers, width 32), a few optimizer steps per model: what is
checked is the recipe (manifests, label encoder, teacher, BiMamba2 and Linformer
students, EncoderClassifier exports, RESULTS.md), not what the models learn.
"""

import csv
import os
import re
import subprocess

from pathlib import Path

import pytest

from speechbrain_cald.data.labels import load_label_encoder
from speechbrain_cald.testing.slurp_voxceleb1 import manifest_pairs

ROOT = Path(__file__).resolve().parents[3]

STEPS = ["--optimizer_step_limit=2", "--number_of_epochs=1", "--num_workers=0", "--n_warmup_steps=1",
         "--decay_steps=2"]


def _run_recipe(recipe, corpus, model, tmp_path, tiny, *extra_args, teacher_extra=(), timeout=600):
    """``./run.sh --recipe RECIPE`` stages 0-4 with the smoke settings ``STEPS + tiny``: ``(exp, RESULTS.md text)``."""
    exp = tmp_path / "exp"
    results_md = exp / "report" / "R.md"
    cmd = ["bash", str(ROOT / "run.sh"), "--skip-setup", "--recipe", recipe, "--data_folder", str(corpus),
           "--pretrained_dir", str(model), "--exp", str(exp), "--results_md", str(results_md),
           "--eval_args=--bench_seconds 1 --bench_repeats 1", "--teacher_args=" + " ".join(STEPS + tiny + list(teacher_extra)),
           "--student_args=" + " ".join(STEPS + tiny), *extra_args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return exp, results_md.read_text()


def _results_rows(text, model):
    """The accuracy table's cells of one model."""
    line = next(line for line in text.splitlines() if line.startswith(f"| {model} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def _check_predictions(folder, split, table_accuracy):
    """The predictions file agrees with the reported accuracy (two independent paths to the number)."""
    with open(folder / f"predictions_{split}.csv") as f:
        rows = list(csv.DictReader(f))
    acc = 100.0 * sum(int(r["correct"]) for r in rows) / len(rows)
    assert f"{acc:.2f}" == table_accuracy


def _load_and_classify(inference, savedir, wav, labels):
    from speechbrain.inference.classifiers import EncoderClassifier

    clf = EncoderClassifier.from_hparams(source=str(inference), savedir=str(savedir))
    _, _, index, text = clf.classify_file(str(wav))
    assert text[0] in labels and labels.index(text[0]) == int(index[0])


@pytest.mark.slow  # ~60 s on 2 quiet cores
def test_slurp_recipe_stages_0_to_4(slurp_corpus, tiny_wav2vec2, tmp_path):
    corpus, written = slurp_corpus
    exp, text = _run_recipe("SLURP/SLU", corpus, tiny_wav2vec2, tmp_path, ["--max_batch_length=8", "--num_buckets=2"],
                            teacher_extra=["--snapshot_interval=1"])
    # stage 0: SLURP's split names, exactly the written recordings with their intents
    for split in ("train", "devel", "test", "train_synthetic"):
        assert manifest_pairs(exp / "data" / f"{split}.csv", corpus) == sorted((w["path"], w["intent"]) for w in written[split])
    labels = sorted({w["intent"] for w in written["train"]})
    assert list(load_label_encoder(str(exp / "data" / "label_encoder.txt")).lab2ind) == labels
    assert (exp / "teacher" / "snapshots" / "step_00000002.ckpt").exists()
    assert text.startswith("# SLURP intent classification: results")
    for model, folder in [("teacher", "teacher"), ("slurp_mamba_target", "slurp_mamba_target"),
                          ("slurp_linformer_target", "slurp_linformer_target")]:
        cells = _results_rows(text, model)
        assert len(cells) == 4 + 4  # sizes + (accuracy, macro-F1) for devel and test
        _check_predictions(exp / folder, "devel", cells[4])
        _check_predictions(exp / folder, "test", cells[6])
        assert f"**{model}**" in text  # its confusion summary
        assert re.search(rf"\| {model} \| [\d,]+ \| [\d,]+ \|", text)  # its speed row
    assert "## Most confused label pairs (test)" in text and "bash recipes/SLURP/SLU/run.sh" in text
    wav = written["test"][0]["path"]
    _load_and_classify(exp / "slurp_mamba_target" / "inference", tmp_path / "sb", wav, labels)


@pytest.mark.slow  # ~60 s on 2 quiet cores
def test_voxceleb1_recipe_stages_0_to_4(voxceleb1_corpus, tiny_wav2vec2, tmp_path):
    corpus, entries = voxceleb1_corpus
    exp, text = _run_recipe("VoxCeleb1/SpeakerID", corpus, tiny_wav2vec2, tmp_path,
                            ["--batch_size=4", "--train_crop_seconds=1.0"],
                            "--students", "voxceleb1_mamba voxceleb1_linformer:waypoint")
    for code, split in (("1", "train"), ("2", "dev"), ("3", "test")):
        expected = sorted((e["path"], e["speaker"]) for e in entries if e["split"] == code)
        assert manifest_pairs(exp / "data" / f"{split}.csv", corpus) == expected
    assert text.startswith("# VoxCeleb1 speaker identification: results")
    for model in ("teacher", "voxceleb1_mamba_target", "voxceleb1_linformer_waypoint"):
        cells = _results_rows(text, model)
        _check_predictions(exp / model if model != "teacher" else exp / "teacher", "test", cells[6])
    # training saw 1 s crops, evaluation whole utterances (4-7 s)
    log = (exp / "voxceleb1_mamba_target" / "train_log.txt").read_text()
    assert "valid accuracy" in log
    speakers = sorted({e["speaker"] for e in entries})
    _load_and_classify(exp / "voxceleb1_linformer_waypoint" / "inference", tmp_path / "sb",
                       next(e["path"] for e in entries if e["split"] == "3"), speakers)


def test_run_sh_names_missing_options(tmp_path):
    for recipe in ("SLURP/SLU", "VoxCeleb1/SpeakerID"):
        proc = subprocess.run(["bash", str(ROOT / "recipes" / recipe / "run.sh"), "--exp", str(tmp_path)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert "missing --data_folder --pretrained_dir" in proc.stderr
