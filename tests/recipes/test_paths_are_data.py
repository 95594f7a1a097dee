"""Issue 24: paths are data, never syntax, from run.sh to train.py's YAML and stage 4.

A folder named ``exp #1`` was cut at the ``#`` by the YAML overrides (outputs went
to ``exp``, data was read from another folder); ``a: b`` was a YAML error. One
recipe over the shared drivers (stages.sh, text_classification.sh: every stage,
train.py for the teacher and a student, the evaluation) runs with every path
option named with ``#``, ``:``, ``=``, quotes, spaces, ``$HOME`` and non-ASCII.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
NAME = "x #1: it's \"q\" $HOME k=v ü"

pytestmark = pytest.mark.slow  # ~1 min on 2 cores: a teacher and a student of one tiny epoch each


def test_a_recipe_runs_with_every_path_option_full_of_syntax(tmp_path, tiny_text_model, imdb_writer):
    corpus, model = tmp_path / f"corpus {NAME}", tmp_path / f"model {NAME}"
    exp, results_md = tmp_path / f"exp {NAME}", tmp_path / f"results {NAME}" / "R.md"
    imdb_writer(corpus, n_per_class=6)
    shutil.copytree(tiny_text_model("bert"), model)
    tiny = "--number_of_epochs=1 --batch_size=4 --max_length=64 --dev_per_class=2"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        ["bash", str(ROOT / "recipes" / "IMDB" / "TextClassification" / "run.sh"), "--data_folder", str(corpus),
         "--pretrained_dir", str(model), "--exp", str(exp), "--results_md", str(results_md),
         "--students", "imdb_linformer", "--teacher_args", tiny, "--student_args", tiny,
         "--eval_args", "--bench_lengths 32 --bench_repeats 1"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert out.returncode == 0, f"run.sh failed:\n{out.stdout[-5000:]}\n{out.stderr[-5000:]}"
    # everything where the paths say, and nothing anywhere else (a cut path would have made another folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (corpus, model, exp, results_md.parent))
    for folder in ("teacher", "imdb_linformer_target"):
        assert (exp / folder / "model.ckpt").exists() and (exp / folder / "hyperparams.yaml").exists()
        record = YAML(typ="rt").load((exp / folder / "hyperparams.yaml").read_text(encoding="utf-8"))
        assert (record["output_folder"], record["data_folder"]) == (str(exp / folder), str(corpus))  # read back whole
    assert (exp / "data" / "train.csv").exists() and (exp / "commands.sh").exists()
    md = results_md.read_text(encoding="utf-8")
    assert "| teacher |" in md and "| linformer_target |" in md
    assert (results_md.parent / "speed_vs_length.png").exists() and not (exp / "RESULTS.md").exists()
