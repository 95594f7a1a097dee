"""The mini Whisper recipe's stages 0-4 end to end on a tiny random Whisper (a CTranslate2 folder).

What is checked is the pipeline, not WER: the corpus (30-s windows of both
voices, unseen test sentences, the real clips), the conversion of the
CTranslate2 folder, the teacher exported as it is, the three students with
their guides (the mixer alignment only where there is a teacher), the
inference folders, RESULTS.md's WERs against the written transcripts, the
agreement and targets sections, an extra test set, and the speed table.
"""

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "mini" / "Whisper"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None, reason="PyPI ctranslate2 not installed"),
    pytest.mark.skipif(importlib.util.find_spec("hibari") is None, reason="PyPI hibari-tts not installed"),
    pytest.mark.skipif(not os.path.isfile("/usr/share/wordnet/data.noun"), reason="Debian wordnet-base not installed"),
]

CORPUS = "--train_sentences=12 --test_sentences=3 --dev_sentences=3"
STUDENT = "--align_steps=2 --batch_size=2 --snapshot_interval=2"


def _wer_column(md: str, model: str, column: int) -> str:
    row = next(line for line in md.splitlines() if line.startswith(f"| {model} |"))
    return row.split("|")[column].strip()


def test_mini_whisper_stages_on_a_tiny_random_whisper(tmp_path):
    from speechbrain_cald.evaluation.whisper_asr import english_normalizer
    from speechbrain_cald.evaluation.wer import corpus_wer
    from speechbrain_cald.testing.whisper import write_tiny_whisper

    _, _, ct2 = write_tiny_whisper(str(tmp_path / "tiny"), d_model=384, heads=6,
                                   max_target_positions=448)  # tiny.en's width, 2 layers
    exp = tmp_path / "exp 1"  # a space in the path
    mine = tmp_path / "mine.csv"  # an extra test set: a real clip, absolute path
    clip = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav"
    with open(mine, "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["ID", "duration", "wav", "wrd"], ["mine-1", "2.4", clip, "he was not an ill disposed young man"]])
    cmd = ["bash", str(RECIPE / "run.sh"), "--exp", str(exp), "--results_md", str(tmp_path / "RESULTS.md"),
           "--pretrained_dir", ct2, "--corpus_args", CORPUS, "--student_args", STUDENT,
           "--extra_tests", f"mine={mine}",
           "--eval_args", "--bench_seconds 30 60 --teacher_bench_seconds 30 --bench_repeats 1"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, f"run.sh failed:\n{out.stdout[-6000:]}\n{out.stderr[-6000:]}"
    for stage in range(5):
        assert f"== stage {stage}:" in out.stdout
    data = exp / "data"
    with open(data / "train.csv", newline="") as f:
        train = list(csv.DictReader(f))
    assert {r["spk_id"] for r in train} <= {"espeak", "hibari", "espeak+hibari"} and train
    assert all(float(r["duration"]) <= 30.0 for r in train)
    with open(data / "test_hibari.csv", newline="") as f:
        test_words = " ".join(r["wrd"] for r in csv.DictReader(f))
    assert not any(r["wrd"] in test_words for r in train)  # unseen sentences
    assert (exp / "pretrained" / "model.safetensors").exists()
    students = {"mamba_target": "mini_mamba_target", "mamba_unguided": "mini_mamba_unguided",
                "linformer_target": "mini_linformer_target"}
    for folder in ["teacher", *students.values()]:
        assert (exp / folder / "inference" / "config.json").exists(), folder
    assert (exp / "mini_mamba_target" / "snapshots" / "step_00000000.ckpt").exists()
    log = (exp / "mini_mamba_target" / "log.txt").read_text()
    assert "mixer alignment: step 2/2" in log
    assert "mixer alignment" not in (exp / "mini_mamba_unguided" / "log.txt").read_text()

    md = (tmp_path / "RESULTS.md").read_text()
    norm = english_normalizer()
    sets = ["test_hibari", "test_espeak", "librivox", "cards", "mine"]
    header = next(line for line in md.splitlines() if line.startswith("| model | encoder params"))
    for s in sets:
        assert f"| {s} (" in header or f" {s} (" in header, s
    for name, folder in {"teacher": "teacher", **students}.items():
        for column, s in enumerate(sets, start=3):
            with open(exp / folder / "hyps" / f"{s}.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            wer = corpus_wer([r["ID"] for r in rows], [norm(r["reference"]) for r in rows],
                             [norm(r["hypothesis"]) for r in rows]).wer
            assert _wer_column(md, name, column) == f"{wer:.2f}", (name, s)
    assert "### Agreement WER (%) with the teacher's transcripts" in md
    assert "## Targets" in md and "mamba_target agreement WER with the teacher on test_hibari at most 10%" in md
    assert "## mamba_target: WER vs training steps on test_hibari" in md
    speed = md.split("## Encoder time")[1]
    teacher_row = next(line for line in speed.splitlines() if line.startswith("| teacher |"))
    assert teacher_row.rstrip(" |").endswith("—")  # the teacher was timed at 30 s only here
    linformer_row = next(line for line in speed.splitlines() if line.startswith("| linformer_target |"))
    assert linformer_row.rstrip(" |").endswith("—")  # no projection rows past its 1,500 frames
    mamba_row = next(line for line in speed.splitlines() if line.startswith("| mamba_target |"))
    assert "—" not in mamba_row
    assert (tmp_path / "speed_vs_length.png").exists()

    # the SpeechBrain-style inference interface on an exported student
    from speechbrain_cald.inference import WhisperTranscriber

    asr = WhisperTranscriber.from_hparams(str(exp / "mini_mamba_target" / "inference"))
    assert isinstance(asr.transcribe_file(clip), str)
