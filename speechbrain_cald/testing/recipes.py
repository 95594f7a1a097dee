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


SMOKE_CORPORA = {
    "LibriSpeech/ASR": dict(kind="librispeech", data="LibriSpeech", name="LibriSpeech",
                            splits={"train-clean-100": 12, "dev-clean": 3, "test-clean": 4, "test-other": 4}),
    "TEDLIUM/ASR": dict(kind="tedlium", data="TEDLIUM_release-3", name="TED-LIUM", talks={"train": 6, "dev": 2, "test": 10}),
}


def smoke_run(recipe: str, out: str, results_md: str, model_type: str = "wav2vec2", bench_seconds: str = "5 10 20") -> int:
    """A recipe's smoke run: a tiny espeak-ng corpus in the distributed layout, a tiny random model, stages 0-4."""
    from speechbrain_cald.testing.speech import save_tiny_speech_model, write_librispeech, write_tedlium

    spec = SMOKE_CORPORA[recipe]
    data = os.path.join(out, spec["data"])
    if not os.path.isdir(data):
        if spec["kind"] == "librispeech":
            write_librispeech(data, spec["splits"])
        else:
            write_tedlium(data, spec["talks"])
    model = os.path.join(out, model_type)
    if not os.path.isdir(model):
        save_tiny_speech_model(model, model_type)
    title = f"{spec['name']} ASR, smoke run: tiny espeak-ng corpus, tiny random {model_type} (WERs mean nothing)"
    cmd = ["bash", str(ROOT / "recipes" / recipe / "run.sh"), "--data_folder", data, "--pretrained_dir", model,
           "--exp", os.path.join(out, "exp"), "--results_md", results_md, "--results_title", title,
           "--teacher_args", TEACHER_ARGS, "--student_args", STUDENT_ARGS,
           "--eval_args", f"--bench_seconds {bench_seconds} --bench_repeats 3 --beam_size 8"]
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env()).returncode


def main(argv=None) -> int:
    """``python -m speechbrain_cald.testing.recipes LibriSpeech/ASR|TEDLIUM/ASR OUT_DIR [--results_md F]``: a smoke run."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("recipe", choices=sorted(SMOKE_CORPORA))
    p.add_argument("out")
    p.add_argument("--results_md", default="", help="default: the recipe's RESULTS.md")
    p.add_argument("--model_type", default="wav2vec2")
    args = p.parse_args(argv)
    results = args.results_md or str(ROOT / "recipes" / args.recipe / "RESULTS.md")
    return smoke_run(args.recipe, os.path.abspath(args.out), os.path.abspath(results), args.model_type)


if __name__ == "__main__":
    sys.exit(main())
