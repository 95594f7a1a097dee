"""Bad inputs to the mini recipe's train.py / evaluate.py: one clear error before any work, or a correct result.

Probes of issue 16: an 8 kHz, a stereo, a zero-sample and a truncated wav, and
a transcript character outside the units, used to fail mid-epoch (IndexError,
NaN loss, ``KeyError: 'Cannot encode unknown label'``) or not at all; the
evaluation wrote ``hyps_<set>.csv`` named by the set only.
"""

import os

import numpy as np
import pytest
import soundfile as sf

from speechbrain_cald.files import data_tag


def test_train_names_every_bad_row_before_training(noise_corpus, tmp_path, mini):
    data = mini.copy_corpus(noise_corpus, tmp_path / "data")
    wav = data / "wav" / "train"
    sf.write(wav / "train_001.wav", np.zeros(8000), 8000)                 # 8 kHz
    sf.write(wav / "train_002.wav", np.zeros((16000, 2)), mini.RATE)           # stereo
    sf.write(wav / "train_003.wav", np.zeros(0), mini.RATE)                    # zero samples
    full = (wav / "train_004.wav").read_bytes()
    (wav / "train_004.wav").write_bytes(full[: len(full) // 2])           # truncated, header intact
    mini.edit_manifest(data / "train.csv", "train_005", wrd="ab 4")            # outside the units
    mini.edit_manifest(data / "valid.csv", "valid_000", wrd="")                # empty transcript
    proc = mini.run_train("mini_teacher.yaml", data, tmp_path / "out")
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr  # SpeechBrain logs the uncaught exception to stdout
    assert "ManifestError: 6 of 10 manifest rows are unusable" in err, err[-3000:]
    assert f"{data}/train.csv:3 (ID train_001) {wav}/train_001.wav: sample rate: expected 16000 Hz, found 8000 Hz" in err
    assert "train.csv:4 (ID train_002)" in err and "channels: expected 1 (mono), found 2" in err
    assert "train.csv:5 (ID train_003)" in err and "empty: no samples" in err
    assert "train.csv:6 (ID train_004)" in err and "length: the duration column says" in err
    assert f"train.csv:7 (ID train_005): transcript: characters outside {data}/units.txt: '4' (U+0034)" in err
    assert "valid.csv:2 (ID valid_000): transcript: empty" in err
    assert "Going into epoch" not in err + proc.stdout  # nothing trained
    report = (tmp_path / "out" / "manifest_problems.txt").read_text().splitlines()
    assert len({line.split(" (ID ")[1].split(")")[0] for line in report}) == 6


def test_evaluation_scores_unknown_characters_and_keeps_each_data_folders_hypotheses(
        noise_corpus, tiny_teacher, tmp_path, recipe_module, monkeypatch, mini):
    evaluate = recipe_module("evaluate")
    model = tmp_path / "teacher"
    os.makedirs(model)
    for name in ("hyperparams.yaml", "model.ckpt"):
        os.symlink(tiny_teacher / name, model / name)
    other = mini.copy_corpus(noise_corpus, tmp_path / "other_data")
    mini.edit_manifest(other / "test.csv", "test_000", wrd="ab caf\u00e9 4")  # characters the model never saw
    common = ["--exp_folder", str(tmp_path), "--models", f"teacher={model}", "--sets", "test",
              "--bench_seconds", "0.5", "--bench_repeats", "1", "--notes", ""]
    assert evaluate.main(["--data_folder", str(noise_corpus), "--results_md", str(tmp_path / "R1.md"), *common]) == 0
    assert evaluate.main(["--data_folder", str(other), "--results_md", str(tmp_path / "R2.md"), *common]) == 0
    own = model / "hyps" / data_tag(str(noise_corpus))
    theirs = model / "hyps" / data_tag(str(other))
    assert own != theirs and own.name.startswith("noise_corpus") and theirs.name.startswith("other_data-")
    for folder, corpus in ((own, noise_corpus), (theirs, other)):
        assert sorted(p.name for p in folder.iterdir()) == ["data_folder.txt", "test.csv", "test_greedy.csv"]
        assert (folder / "data_folder.txt").read_text().strip() == os.path.realpath(corpus)
    assert "ab caf\u00e9 4" in (theirs / "test.csv").read_text(encoding="utf-8")
    assert "ab caf\u00e9 4" not in (own / "test.csv").read_text(encoding="utf-8")

    # a crashed evaluation leaves none of the previous run's files behind
    def crash(*args, **kwargs):
        raise RuntimeError("crash while decoding")

    monkeypatch.setattr(evaluate, "transcribe", crash)
    with pytest.raises(RuntimeError, match="crash while decoding"):
        evaluate.main(["--data_folder", str(other), "--results_md", str(tmp_path / "R2.md"), *common])
    assert sorted(p.name for p in theirs.iterdir()) == ["data_folder.txt"]
    assert (own / "test.csv").exists()  # the other data folder's evaluation is untouched
    assert (tmp_path / "R2.md").exists() and not list(tmp_path.glob(".R2.md*"))
