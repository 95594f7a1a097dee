"""What the corpus recipe tests share: smoke settings, running a recipe, reading its outputs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[2]  # the repository (recipes/ beside the package)

# smoke settings: overrides of the paper's defaults, never defaults themselves
TEACHER_ARGS = "--number_of_epochs=1 --max_batch_length=12 --num_workers=0 --snapshot_interval=2 --n_warmup_steps=2"
STUDENT_ARGS = "--number_of_epochs=1 --max_batch_length=12 --num_workers=0 --n_warmup_steps=2"
EVAL_ARGS = "--bench_seconds 1 --bench_repeats 1 --beam_size 8"


def env() -> Dict[str, str]:
    """The test's Python first on PATH (the recipe calls `python`), one thread per process."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def run_recipe(recipe: str, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``bash recipes/<recipe>/run.sh ARGS`` from ``cwd`` (not the recipe folder)."""
    out = subprocess.run(["bash", str(ROOT / "recipes" / recipe / "run.sh"), *args], capture_output=True, text=True,
                         cwd=cwd, env=env())
    if check:
        assert out.returncode == 0, f"run.sh failed:\n{out.stdout[-5000:]}\n{out.stderr[-5000:]}"
    return out


def read_csv(path) -> List[Dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def results_rows(md: str, model: str) -> List[str]:
    """The RESULTS.md table rows of ``model``."""
    return [line for line in md.splitlines() if line.startswith(f"| {model} |")]


def check_exported_folder_transcribes(inference: Path, savedir: Path, audio: Path) -> str:
    """SpeechBrain's EncoderASR loads the exported folder offline and transcribes ``audio`` in one pass."""
    from speechbrain.inference.ASR import EncoderASR

    asr = EncoderASR.from_hparams(source=str(inference), savedir=str(savedir))
    text = asr.transcribe_file(str(audio))
    assert isinstance(text, str)
    return text
