"""The text recipes end to end (stages 0-4) on tiny corpora in their distributed layouts.

GLUE SST-2 (tiny random RoBERTa), STS-B (tiny random BERT, a regression head) and
MNLI (matched + mismatched), IMDB (BERT; reviews longer than the model's 64
positions, full-length evaluation), each run as a user would with run.sh;
SST-2's student also under torchrun. Every number reported is checked against
the per-example predictions and an independent count.
"""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

TINY = [  # the tiny models know 64 positions; one short epoch per model
    "--teacher_args", "--number_of_epochs=1 --batch_size=4 --eval_batch_size=8 --max_length=64",
    "--student_args", "--number_of_epochs=1 --batch_size=4 --eval_batch_size=8 --max_length=64",
]


def _env():
    # the venv's python first; no hub access
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_recipe(recipe, tmp_path, *args, check=True):
    cmd = ["bash", str(ROOT / "recipes" / recipe / "run.sh"), "--exp", str(tmp_path / "exp"), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=_env())
    if check:
        assert out.returncode == 0, f"run.sh failed:\n{out.stdout[-5000:]}\n{out.stderr[-5000:]}"
    return out


def read_predictions(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def results_row(md, model):
    """The cells of ``model``'s row of RESULTS.md's scores table."""
    line = next(line for line in md.splitlines() if line.startswith(f"| {model} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def check_common(exp, students, splits):
    log_done = (exp / "stage_times.tsv").read_text()
    for stage in range(5):
        assert re.search(rf"^{stage}\t", log_done, re.M), f"stage {stage} did not finish"
    assert (exp / "data" / "corpus.json").exists()
    assert all((exp / "data" / f"{s}.csv").exists() for s in splits)
    snaps = sorted(p.name for p in (exp / "teacher" / "snapshots").glob("step_*.ckpt"))
    assert snaps[0] == "step_00000000.ckpt" and len(snaps) >= 2  # the pretrained start + waypoints
    for name in students:
        folder = exp / name
        assert (folder / "model.ckpt").exists(), name
        log = (folder / "train_log.txt").read_text()
        assert "train layer" in log, f"{name}: no layer distillation term in {log}"
        from speechbrain_cald.convert import load_student

        student = load_student(folder / "inference")  # stage 4's export, offline loadable
        assert student.cald_conversion["mixer"] in ("linformer", "bimamba2")
        assert (folder / "inference" / "tokenizer.json").exists()


@pytest.fixture(scope="module")
def sst2(tmp_path_factory, tiny_text_model, glue_writer):
    tmp = tmp_path_factory.mktemp("sst2")
    glue_writer(tmp / "glue", "sst2", n=24)
    out = run_recipe("GLUE/TextClassification", tmp, "--data_folder", str(tmp / "glue"), "--pretrained_dir",
                     tiny_text_model("roberta"), "--task", "sst2", *TINY,
                     "--eval_args", "--bench_lengths 16 96 --bench_repeats 1")
    return tmp, out.stdout


def test_glue_sst2_end_to_end(sst2):
    tmp, log = sst2
    exp = tmp / "exp"
    check_common(exp, ["glue_linformer_target", "glue_mamba_target"], ["train", "dev"])
    md = (exp / "RESULTS.md").read_text()
    assert "GLUE sst2" in md and "dev: accuracy" in md and "majority class" in md
    for name, folder in (("teacher", "teacher"), ("linformer_target", "glue_linformer_target"),
                         ("mamba_target", "glue_mamba_target")):
        preds = read_predictions(exp / folder / "predictions_dev.csv")
        accuracy = 100 * sum(p["label"] == p["prediction"] for p in preds) / len(preds)
        assert results_row(md, name)[2] == f"{accuracy:.2f}"
    # speed: the Linformer stops at its projections' length (64 tokens), the others go on
    assert results_row(md, "linformer_target")[2] != "" and "96 tokens: ms" in md
    speed_line = next(line for line in md.splitlines() if line.startswith("| linformer_target | ") and "—" in line)
    assert speed_line
    assert (exp / "speed_vs_length.png").exists()


def test_glue_under_torchrun(sst2, tiny_text_model):
    """python train.py ... works under torchrun (2 CPU processes, gloo), from the recipe folder."""
    tmp, _ = sst2
    exp = tmp / "exp"
    out_dir = exp / "glue_linformer_ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
           "hparams/glue_linformer.yaml", f"--data_folder={tmp / 'glue'}", f"--pretrained_dir={tiny_text_model('roberta')}",
           "--task=sst2", f"--teacher_folder={exp / 'teacher'}", f"--output_folder={out_dir}",
           "--number_of_epochs=1", "--batch_size=4", "--max_length=64", "--guide=unguided", "--distributed_backend=gloo"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT / "recipes" / "GLUE" / "TextClassification",
                         env={**_env(), "OMP_NUM_THREADS": "1"}, timeout=600)
    assert out.returncode == 0, f"torchrun failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert (out_dir / "model.ckpt").exists()


def test_glue_stsb_regression_end_to_end(tmp_path, tiny_text_model, glue_writer):
    glue_writer(tmp_path / "glue", "stsb", n=20)
    run_recipe("GLUE/TextClassification", tmp_path, "--data_folder", str(tmp_path / "glue"), "--pretrained_dir",
               tiny_text_model("bert"), "--task", "stsb", *TINY, "--eval_args", "--bench_lengths")
    exp = tmp_path / "exp"
    check_common(exp, ["glue_linformer_target", "glue_mamba_target"], ["train", "dev"])
    state = torch.load(exp / "teacher" / "model.ckpt", weights_only=True)
    assert state["classifier.weight"].shape[0] == 1  # one output: a regression head
    md = (exp / "RESULTS.md").read_text()
    assert "dev: Pearson / Spearman" in md and "majority class" not in md
    from scipy.stats import pearsonr

    preds = read_predictions(exp / "teacher" / "predictions_dev.csv")
    r = pearsonr([float(p["prediction"]) for p in preds], [float(p["label"]) for p in preds])[0]
    assert results_row(md, "teacher")[2].split(" / ")[0] == f"{100 * r:.2f}"


def test_glue_mnli_matched_and_mismatched(tmp_path, tiny_text_model, glue_writer):
    glue_writer(tmp_path / "glue", "mnli", n=15)
    run_recipe("GLUE/TextClassification", tmp_path, "--data_folder", str(tmp_path / "glue"), "--pretrained_dir",
               tiny_text_model("roberta"), "--task", "mnli", *TINY, "--students", "glue_linformer",
               "--eval_args", "--bench_lengths")
    exp = tmp_path / "exp"
    check_common(exp, ["glue_linformer_target"], ["train", "dev_matched", "dev_mismatched"])
    md = (exp / "RESULTS.md").read_text()
    assert "dev_matched: accuracy" in md and "dev_mismatched: accuracy" in md
    labels = {p["label"] for p in read_predictions(exp / "teacher" / "predictions_dev_mismatched.csv")}
    assert labels == {"contradiction", "entailment", "neutral"}


def test_glue_usage_errors(tmp_path, tiny_text_model, glue_writer):
    out = run_recipe("GLUE/TextClassification", tmp_path, "--data_folder", str(tmp_path), check=False)
    assert out.returncode == 2 and "missing --pretrained_dir --task" in out.stderr
    out = run_recipe("GLUE/TextClassification", tmp_path, "--data_folder", str(tmp_path), "--pretrained_dir",
                     str(tmp_path), "--task", "squad", check=False)
    assert out.returncode == 2 and "unknown GLUE task 'squad'" in out.stderr
    # a malformed line stops stage 0 with the file and the line
    glue_writer(tmp_path / "glue", "rte", n=6)
    dev = tmp_path / "glue" / "RTE" / "dev.tsv"
    dev.write_text(dev.read_text().replace("\tentailment\n", "\tmaybe\n", 1))
    out = run_recipe("GLUE/TextClassification", tmp_path, "--data_folder", str(tmp_path / "glue"), "--pretrained_dir",
                     tiny_text_model("roberta"), "--task", "rte", "--stop_stage", "2", check=False)
    assert out.returncode != 0 and re.search(r"RTE/dev.tsv:\d+: label 'maybe' is not one of", out.stdout + out.stderr)
    assert not (tmp_path / "exp" / "teacher" / "model.ckpt").exists()


def test_imdb_end_to_end_with_full_length_reviews(tmp_path, tiny_text_model, imdb_writer):
    from transformers import AutoTokenizer

    imdb_writer(tmp_path / "corpus", n_per_class=8)
    run_recipe("IMDB/TextClassification", tmp_path, "--data_folder", str(tmp_path / "corpus"), "--pretrained_dir",
               tiny_text_model("bert"), "--teacher_args",
               "--number_of_epochs=1 --batch_size=4 --max_length=64 --dev_per_class=2",
               "--student_args", "--number_of_epochs=1 --batch_size=4 --max_length=64 --dev_per_class=2",
               "--eval_args", "--bench_lengths 32 160 --bench_repeats 1")
    exp = tmp_path / "exp"
    check_common(exp, ["imdb_linformer_target", "imdb_mamba_target"], ["train", "dev", "test"])
    md = (exp / "RESULTS.md").read_text()
    # truncation: the reported count equals the tokenizer's own count of reviews over 64 tokens
    tok = AutoTokenizer.from_pretrained(tiny_text_model("bert"), local_files_only=True)
    with open(exp / "data" / "test.csv", newline="") as f:
        texts = [r["text_a"] for r in csv.DictReader(f)]
    long = sum(len(tok(t)["input_ids"]) > 64 for t in texts)
    assert 0 < long < len(texts)
    assert f"{long:,} / {len(texts):,} (64 tokens)" in md
    # full length: BiMamba2 reads whole reviews, the Linformer stops at 64, the teacher stays truncated
    assert "## Full-length inputs" in md
    full = read_predictions(exp / "imdb_mamba_target" / "predictions_test_full.csv")
    assert max(int(p["tokens"]) for p in full) > 64
    mamba_row = next(line for line in md.split("## Full-length inputs")[1].splitlines() if line.startswith("| mamba_target"))
    assert "none (positions tiled)" in mamba_row and "= truncated" not in mamba_row
    assert not (exp / "imdb_linformer_target" / "predictions_test_full.csv").exists()


def test_glue_refuses_a_pretrained_dir_that_is_not_a_text_teacher(tmp_path, tiny_text_model, glue_writer):
    """Issue 24 probe: a converted student (or another model's weights) as --pretrained_dir trained from
    random weights with exit 0; a speech model is now refused too, naming the family expected."""
    from transformers import AutoModelForSequenceClassification

    from speechbrain_cald.convert import save_student, to_linear_time
    from speechbrain_cald.testing.speech import save_tiny_speech_model

    glue_writer(tmp_path / "glue", "rte", n=6)
    student = tmp_path / "student"
    bert = AutoModelForSequenceClassification.from_pretrained(tiny_text_model("bert"), num_labels=2)
    save_student(to_linear_time(bert, "linformer"), student)
    shutil.copy(Path(tiny_text_model("bert")) / "tokenizer.json", student)
    speech = save_tiny_speech_model(str(tmp_path / "wav2vec2"))
    for folder, message in ((student, "holds a converted student (cald_conversion.json), not a"),
                            (speech, "a speech model (model_type 'wav2vec2', it reads input_values), expected a text")):
        out = run_recipe("GLUE/TextClassification", tmp_path, "--data_folder", str(tmp_path / "glue"),
                         "--pretrained_dir", str(folder), "--task", "rte", "--stop_stage", "2", check=False)
        assert out.returncode != 0 and message in out.stdout + out.stderr
        assert not (tmp_path / "exp" / "teacher" / "model.ckpt").exists()
