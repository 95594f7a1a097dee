"""The LibriSpeech ASR recipe on a tiny corpus written in the distributed layout (espeak-ng speech, FLAC).

End to end (stages 0-4, a tiny random wav2vec2 teacher, the BiMamba2 and
Linformer students), then what a user does next with the outputs: train.py
alone, torchrun with 2 CPU processes, the exported EncoderASR folder; a HuBERT
teacher through stage 3; the preparation's errors and warnings.
"""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from speechbrain_cald.testing.recipes import (EVAL_ARGS, ROOT, STUDENT_ARGS, TEACHER_ARGS, check_exported_folder_transcribes, env,
                                read_csv, results_rows, run_recipe)

RECIPE_DIR = ROOT / "recipes" / "LibriSpeech" / "ASR"
SPLITS = {"train-clean-100": 8, "dev-clean": 2, "test-clean": 3, "test-other": 2}

espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from speechbrain_cald.testing.speech import save_tiny_speech_model, write_librispeech

    root = tmp_path_factory.mktemp("librispeech")
    written = write_librispeech(str(root / "LibriSpeech"), SPLITS)
    save_tiny_speech_model(str(root / "w2v2"), "wav2vec2")
    return root, written


@pytest.fixture(scope="module")
def recipe_run(corpus):
    root, written = corpus
    exp, results = root / "exp", root / "R" / "RESULTS.md"
    log = run_recipe("LibriSpeech/ASR", root, "--data_folder", str(root / "LibriSpeech"), "--pretrained_dir",
                     str(root / "w2v2"), "--exp", str(exp), "--results_md", str(results),
                     "--teacher_args", TEACHER_ARGS, "--student_args", STUDENT_ARGS, "--eval_args", EVAL_ARGS).stdout
    return root, written, exp, results, log


@pytest.mark.slow
@espeak
def test_stages_0_to_4_end_to_end(recipe_run):
    root, written, exp, results, log = recipe_run
    for stage in range(5):
        assert f"== stage {stage}:" in log
    # stage 0: one manifest per split, exactly the corpus's utterances with their transcripts
    for split, ids in written.items():
        rows = read_csv(exp / "data" / f"{split}.csv")
        assert sorted(r["ID"] for r in rows) == sorted(ids)
        for r in rows:
            spk, chapter, _ = r["ID"].split("-")
            trans = root / "LibriSpeech" / split / spk / chapter / f"{spk}-{chapter}.trans.txt"
            assert f"{r['ID']} {r['wrd']}" in trans.read_text().splitlines()
            assert r["wav"] == f"$data_root/{split}/{spk}/{chapter}/{r['ID']}.flac"
    # stages 2-3: the contract's folders
    assert (exp / "teacher" / "model.ckpt").exists() and (exp / "teacher" / "hyperparams.yaml").exists()
    assert (exp / "teacher" / "snapshots" / "step_00000000.ckpt").exists()
    for student in ("librispeech_mamba_target", "librispeech_linformer_target"):
        assert (exp / student / "model.ckpt").exists()
        assert "train layer" in (exp / student / "train_log.txt").read_text()
    # stage 4: RESULTS.md where --results_md says, a WER (S/D/I) per test split for every model
    md = results.read_text()
    for model in ("teacher", "mamba_target", "linformer_target"):
        rows = results_rows(md, model)
        assert len(rows) == 3, model  # LM table, greedy table, speed table
        for row in rows[:2]:
            cells = row.split("|")[5:7]
            assert all(c.strip() and c.strip() != "—" and "/" in c for c in cells), row
        folder = exp / ("teacher" if model == "teacher" else f"librispeech_{model}")
        (hyps,) = (folder / "hyps").iterdir()  # one data folder evaluated
        for split in ("test-clean", "test-other"):
            text = (hyps / f"wer_{split}.txt").read_text()
            assert text.startswith("%WER") and "ALIGNMENTS" in text
            assert (hyps / f"wer_{split}_greedy.txt").exists()
        assert (folder / "inference" / "hyperparams.yaml").exists()
    assert "CTC beam search `speechbrain` with KenLM over `word_3gram.arpa`" in md
    # every stage is skipped when run again
    again = run_recipe("LibriSpeech/ASR", root, "--data_folder", str(root / "LibriSpeech"), "--pretrained_dir",
                       str(root / "w2v2"), "--exp", str(exp), "--stop_stage", "3").stdout
    assert again.count("skipped, outputs exist") == 5 and ": running" not in again


@pytest.mark.slow
@espeak
def test_exported_student_transcribes_a_long_recording_in_one_pass(recipe_run, tmp_path):
    root, _, exp, _, _ = recipe_run
    clips = [sf.read(p)[0] for p in sorted((root / "LibriSpeech" / "train-clean-100").rglob("*.flac"))]
    long = np.concatenate(clips * 3)  # ~40 s
    sf.write(tmp_path / "long.flac", long, 16000)
    text = check_exported_folder_transcribes(exp / "librispeech_mamba_target" / "inference", tmp_path / "s", tmp_path / "long.flac")
    assert set(text) <= set(" ABCDEFGHIJKLMNOPQRSTUVWXYZ'")


@pytest.mark.slow
@espeak
def test_train_py_alone_from_the_recipe_folder(recipe_run, tmp_path):
    root, _, exp, _, _ = recipe_run
    out = subprocess.run(
        [sys.executable, "train.py", "hparams/librispeech_mamba.yaml", f"--data_folder={root / 'LibriSpeech'}",
         f"--pretrained_dir={root / 'w2v2'}", f"--teacher_folder={exp / 'teacher'}", f"--output_folder={tmp_path / 'O'}",
         "--number_of_epochs=1"], cwd=RECIPE_DIR, capture_output=True, text=True, env=env())
    assert out.returncode == 0, out.stderr[-4000:]
    assert (tmp_path / "O" / "model.ckpt").exists()
    assert "match these options; kept" in out.stdout + out.stderr  # the teacher's preparation is reused


@pytest.mark.slow
@espeak
def test_torchrun_two_cpu_processes(recipe_run, tmp_path):
    root, _, exp, _, _ = recipe_run
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
           "hparams/librispeech_mamba.yaml", f"--data_folder={root / 'LibriSpeech'}", f"--pretrained_dir={root / 'w2v2'}",
           f"--teacher_folder={exp / 'teacher'}", f"--output_folder={tmp_path / 'ddp'}", "--distributed_backend=gloo",
           *STUDENT_ARGS.split()]
    out = subprocess.run(cmd, cwd=RECIPE_DIR, capture_output=True, text=True, env={**env(), "OMP_NUM_THREADS": "1"},
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-4000:]
    assert (tmp_path / "ddp" / "model.ckpt").exists()


@pytest.mark.slow
@espeak
def test_hubert_teacher_through_stage_3(corpus):
    from speechbrain_cald.testing.speech import save_tiny_speech_model

    root, _ = corpus
    save_tiny_speech_model(str(root / "hubert"), "hubert")
    log = run_recipe("LibriSpeech/ASR", root, "--data_folder", str(root / "LibriSpeech"), "--pretrained_dir",
                     str(root / "hubert"), "--exp", str(root / "exp_hubert"), "--stop_stage", "3",
                     "--students", "librispeech_mamba", "--teacher_args", TEACHER_ARGS, "--student_args", STUDENT_ARGS).stdout
    assert "CALD student librispeech_mamba, guide target: done" in log
    assert (root / "exp_hubert" / "librispeech_mamba_target" / "model.ckpt").exists()


def test_missing_options_are_a_usage_error(tmp_path):
    out = run_recipe("LibriSpeech/ASR", tmp_path, "--data_folder", str(tmp_path), check=False)
    assert out.returncode == 2 and "missing --pretrained_dir" in out.stderr
    top = subprocess.run(["bash", str(ROOT / "run.sh"), "--skip-setup", "--recipe", "LibriSpeech/ASR"], capture_output=True,
                         text=True, env=env(), cwd=tmp_path)
    assert top.returncode == 2 and "missing --data_folder --pretrained_dir" in top.stderr
    assert not (tmp_path / "exp").exists()


# ------------------------------------------------------------- preparation
def _corpus(root, chapters):
    """``{(split, spk, chapter): {utt: text}}`` as flac files (silence) and trans.txt files."""
    for (split, spk, chapter), utts in chapters.items():
        folder = root / split / str(spk) / str(chapter)
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for utt, text in utts.items():
            sf.write(folder / f"{spk}-{chapter}-{utt}.flac", np.zeros(1600), 16000)
            lines.append(f"{spk}-{chapter}-{utt} {text}".rstrip() + "\n")
        (folder / f"{spk}-{chapter}.trans.txt").write_text("".join(lines))


def test_preparation_reports_every_problem_by_file(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPE_DIR))
    from librispeech_prepare import prepare_librispeech

    data = tmp_path / "LibriSpeech"
    _corpus(data, {("dev-clean", 1, 10): {"0000": "HELLO THERE", "0001": "GOOD", "0002": ""},
                   ("dev-clean", 2, 20): {"0000": "A B"}})
    (data / "dev-clean" / "1" / "10" / "1-10-0001.flac").unlink()                       # transcript line without audio
    sf.write(data / "dev-clean" / "2" / "20" / "2-20-0009.flac", np.zeros(800), 16000)  # audio without a line
    out = prepare_librispeech(str(data), str(tmp_path / "d"), ["dev-clean"])
    err = capsys.readouterr().err
    assert [r["ID"] for r in read_csv(out["dev-clean"])] == ["1-10-0000", "2-20-0000"]
    assert "1 transcript lines without audio" in err and "1-10.trans.txt:2 (1-10-0001.flac missing)" in err
    assert "1 audio files without a transcript line" in err and "2-20-0009.flac" in err
    assert "1 empty transcripts" in err and "1-10.trans.txt:3" in err
    with pytest.raises(FileNotFoundError, match="dev-other.*holds: dev-clean"):
        prepare_librispeech(str(data), str(tmp_path / "d"), ["dev-other"])
    with pytest.raises(FileNotFoundError, match="pass --data_folder=.*LibriSpeech"):
        prepare_librispeech(str(tmp_path), str(tmp_path / "d2"), ["dev-clean"])
    capsys.readouterr()
    prepare_librispeech(str(data), str(tmp_path / "d"), ["dev-clean"])  # same options: kept
    assert "match these options; kept" in capsys.readouterr().out


@pytest.mark.slow
@espeak
def test_unigram_tokens_from_training_to_lm_decoding(corpus):
    root, _ = corpus
    exp = root / "exp_unigram"
    pieces = "--vocab_size=30 --output_neurons=30"
    log = run_recipe("LibriSpeech/ASR", root, "--data_folder", str(root / "LibriSpeech"), "--pretrained_dir",
                     str(root / "w2v2"), "--exp", str(exp), "--token_type", "unigram", "--students", "",
                     "--teacher_args", f"{TEACHER_ARGS} {pieces}", "--eval_args", EVAL_ARGS).stdout
    assert "== stage 4:" in log
    assert (exp / "data" / "tokens" / "30_unigram.model").exists()
    md = (exp / "RESULTS.md").read_text()
    lm_row, greedy_row, _ = results_rows(md, "teacher")
    assert all("/" in c for c in lm_row.split("|")[5:7])  # WER (S/D/I) with the LM for both splits
    text = check_exported_folder_transcribes(exp / "teacher" / "inference", root / "s_unigram",
                                             next((root / "LibriSpeech" / "test-clean").rglob("*.flac")))
    assert "\u2581" not in text
