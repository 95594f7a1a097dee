"""recipes/mini/LM on a small slice: stages 0-4 through run.sh with every size shrunk.

The corpus comes from a small dictionary in GCIDE's dictd format written here
(the parser and the recipe are exercised whether or not Debian's dict-gcide is
installed); the recipe's own default reads /usr/share/dictd/gcide.dict.dz.
"""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from speechbrain_cald.data.gcide import clean_entry, gcide_documents

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "recipes" / "mini" / "LM" / "run.sh"
ARCH = "--vocab_size=300 --hidden_size=32 --num_layers=2 --num_heads=2 --intermediate_size=64 --max_positions=512"
TINY = f"{ARCH} --block_size=32 --batch_size=4 --train_blocks=8 --valid_blocks=2"

sys.path.insert(0, str(Path(__file__).parent))
from lm_corpus import lm_documents  # noqa: E402


def write_dictd(path: Path, n: int = 600) -> Path:
    """A dictionary in GCIDE's dictd layout: header entries, headwords at column 0, indented senses."""
    lines = ["", "00-database-info", "   This file was converted from the original database", ""]
    for i, text in enumerate(lm_documents(n, seed=2)):
        lines += [f"Word{i} \\Word{i}\\, n. [L. verbum.]", f"   1. {text} --Bacon.", "      [1913 Webster]", ""]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path


def test_dictionary_markup_is_removed(tmp_path):
    docs = list(gcide_documents(str(write_dictd(tmp_path / "d.dict.dz", 3))))
    assert len(docs) == 3 and docs[0].startswith("Word0, n. 1. ") and docs[0].endswith(".")
    assert not any(mark in d for d in docs for mark in ("\\", "[", "--Bacon", "Webster"))
    assert clean_entry(['Dichotomy \\Di*chot"o*my\\, n. [Gr. ?, fr. ?: cf. F.', "   dichotomie.]", "   A cutting in two."]) == (
        "Dichotomy, n. A cutting in two."
    )


@pytest.mark.slow
def test_mini_lm_recipe_on_a_slice(tmp_path, mini):
    gcide = write_dictd(tmp_path / "gcide.dict.dz")
    exp, results = tmp_path / "exp", tmp_path / "RESULTS.md"
    cmd = [
        "bash", str(RUN), "--data", str(tmp_path / "data"), "--exp", str(exp), "--results_md", str(results),
        "--gcide", str(gcide), "--max_train", "0", "--vocab_size", "300",
        "--teacher_args", TINY + " --snapshot_interval=1", "--student_args", TINY,
        "--bench_prompt_lengths", "40", "--check_faster_at", "40",
        "--eval_args", "--eval_blocks 4 --bench_new_tokens 3 --bench_repeats 1 --bench_models teacher mamba_target",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=mini.recipe_env(TQDM_DISABLE=1), timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    corpus = tmp_path / "data" / "corpus"
    first = json.loads((corpus / "train" / "gcide.jsonl").read_text().splitlines()[0])
    assert first["text"].startswith("Word0, n.")
    assert (tmp_path / "data" / "tokenizer" / "tokenizer.json").is_file()
    assert all((exp / "data" / f"{s}.csv").is_file() for s in ("train", "val", "test"))
    assert (exp / "teacher" / "inference" / "config.json").is_file()
    report = json.loads((exp / "results.json").read_text())
    assert set(report["models"]) == {"teacher", "mamba_target", "mamba_unguided"}
    text = results.read_text()
    assert "## Targets" in text and "test perplexity within 15% of teacher's" in text
    assert "generates faster than teacher after a 40-token prompt" in text
    assert (tmp_path / "generation_vs_prompt.png").is_file()
