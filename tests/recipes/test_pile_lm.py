"""recipes/Pile/LM end to end on a tiny JSON-lines corpus (plain + zstd) and a tiny random Pythia.

Stages 0-4 through run.sh, as a user runs them; every size is shrunk by overrides
(the YAML defaults are the paper's).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechbrain_cald.convert import load_student

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "recipes" / "Pile" / "LM" / "run.sh"
TINY = "--block_size=32 --batch_size=4 --grad_accumulation_factor=1 --number_of_epochs=1 --train_blocks=12 --valid_blocks=2"

sys.path.insert(0, str(Path(__file__).parent))
from lm_corpus import lm_documents, write_pile_corpus  # noqa: E402


def test_usage_error_names_missing_options(mini):
    out = subprocess.run(["bash", str(RUN)], capture_output=True, text=True, env=mini.recipe_env())
    assert out.returncode == 2
    assert "missing --data_folder --pretrained_dir" in out.stderr


@pytest.mark.slow
def test_pile_recipe_end_to_end(tmp_path, tiny_pythia, mini):
    corpus = write_pile_corpus(tmp_path / "pile", lm_documents(400, seed=1))
    exp = tmp_path / "exp"
    results = tmp_path / "RESULTS.md"
    cmd = [
        "bash", str(RUN), "--data_folder", str(corpus), "--pretrained_dir", str(tiny_pythia),
        "--exp", str(exp), "--results_md", str(results),
        "--teacher_args", TINY + " --snapshot_interval=2", "--student_args", TINY,
        "--eval_blocks", "4",
        "--eval_args", "--block_size 32 --bench_prompt_lengths 24 --bench_new_tokens 3 --bench_repeats 1 "
                       "--bench_models teacher mamba_target",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=mini.recipe_env(TQDM_DISABLE=1), timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    # stage 0-1: one manifest per split, token shards
    assert all((exp / "data" / f"{s}.csv").is_file() for s in ("train", "val", "test"))
    train_rows = (exp / "data" / "train.csv").read_text().splitlines()
    assert len(train_rows) == 3 and "jsonl.zst" in train_rows[2]
    # stage 2-3: teacher (with snapshots) and both students where the contract puts them
    assert (exp / "teacher" / "model.ckpt").is_file() and list((exp / "teacher" / "snapshots").glob("step_*.ckpt"))
    for guide in ("target", "unguided"):
        folder = exp / f"pile_mamba_{guide}"
        assert (folder / "model.ckpt").is_file() and (folder / "inference" / "tokenizer.json").is_file()
    # stage 4: perplexities of every model, computed twice, and the generation table
    report = json.loads((exp / "results.json").read_text())
    assert set(report["models"]) == {"pretrained", "teacher", "mamba_target", "mamba_unguided"}
    for name, r in report["models"].items():
        for split in ("val", "test"):
            ppl = r["ppl"][split]
            assert ppl["tokens"] == 4 * 31 and abs(ppl["nll"] - ppl["nll_transformers"]) < 1e-4, name
    assert set(report["generation"]) == {"teacher", "mamba_target"}
    text = results.read_text()
    assert "| mamba_target |" in text and (tmp_path / "generation_vs_prompt.png").is_file()

    # the exported student generates with its recurrent state exactly as by recomputing
    student = load_student(exp / "pile_mamba_target" / "inference").eval()
    prompt = torch.randint(0, 300, (1, 11))
    with torch.no_grad():
        kw = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
        assert torch.equal(student.generate(prompt, use_cache=True, **kw), student.generate(prompt, use_cache=False, **kw))
