"""A tiny corpus and tiny models for running the recipes' train.py / evaluate.py in tests.

No espeak-ng: the audio is seeded noise, the transcripts short words of the
units' letters. What the tests check is the machinery (validation, locks,
resume, DDP, NaN handling, file naming), not what the model learns; a model
of 2 layers and width 32 trains an epoch of 8 utterances in a few seconds.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechbrain_cald.data.manifest import write_manifest
from speechbrain_cald.data.units import build_char_units
from speechbrain_cald.decoders.ngram import main as ngram_main

ROOT = Path(__file__).resolve().parents[2]
MINI_ASR = ROOT / "recipes" / "mini" / "ASR"
RATE = 16000
WORDS = ["ab", "ba", "cab", "dab", "bad", "add"]

# Overrides that make any mini YAML tiny (teacher and students share the architecture keys).
TINY_MODEL = [
    "--d_model=32", "--nhead=2", "--num_encoder_layers=2", "--d_ffn=64", "--cnn_channels=4", "--n_mels=20",
    "--kernel_size=3", "--number_of_epochs=1", "--max_batch_length=3.0", "--num_buckets=2",
    "--n_warmup_steps=2",
]
TINY_STUDENT = ["--d_state=8", "--headdim=16", "--chunk_size=16"]


def write_noise_corpus(folder: Path, splits=(("train", 8), ("valid", 2), ("test", 3)), seed=0):
    """Noise wavs of 0.6-1.0 s with two-word transcripts, manifests, units and a word 3-gram."""
    rng = np.random.default_rng(seed)
    for split, n in splits:
        rows = []
        (folder / "wav" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            uid = f"{split}_{i:03d}"
            samples = int(RATE * rng.uniform(0.6, 1.0))
            sf.write(folder / "wav" / split / f"{uid}.wav", 0.1 * rng.standard_normal(samples), RATE, subtype="PCM_16")
            text = " ".join(rng.choice(WORDS, 2))
            rows.append(dict(ID=uid, duration=samples / RATE, wav=f"$data_root/wav/{split}/{uid}.wav", spk_id="s", wrd=text))
        write_manifest(str(folder / f"{split}.csv"), rows)
    build_char_units([str(folder / "train.csv")], str(folder / "units.txt"))
    ngram_main([str(folder / "lm_3gram.arpa"), str(folder / "train.csv"), "--order", "3"])
    return folder


@pytest.fixture(scope="session")
def noise_corpus(tmp_path_factory):
    """A read-only-by-convention tiny corpus shared by the recipe tests (copy it to change it)."""
    return write_noise_corpus(tmp_path_factory.mktemp("noise_corpus"))


def recipe_env(**extra):
    """The test's Python first on PATH, one thread per process (2 cores shared by everything)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def train_args(yaml, data, out, *overrides, teacher=None):
    """``train.py hparams/<yaml> --key=value...``: tiny, with ``overrides`` winning over the tiny values."""
    merged = {}
    for arg in [f"--data_folder={data}", f"--output_folder={out}", *TINY_MODEL, "--noprogressbar",
                *([f"--teacher_folder={teacher}", *TINY_STUDENT] if teacher is not None else []), *overrides]:
        merged[arg.split("=", 1)[0]] = arg
    return ["train.py", f"hparams/{yaml}", *merged.values()]


def run_train(yaml, data, out, *overrides, teacher=None, timeout=240, env=None, launcher=()):
    """``python train.py hparams/<yaml> ...`` of the mini recipe, tiny; returns the CompletedProcess."""
    cmd = [*(launcher or [sys.executable]), *train_args(yaml, data, out, *overrides, teacher=teacher)]
    return subprocess.run(cmd, cwd=MINI_ASR, capture_output=True, text=True, timeout=timeout, env=env or recipe_env())


@pytest.fixture(scope="session")
def tiny_teacher(noise_corpus, tmp_path_factory):
    """A teacher folder (model.ckpt + step-0 snapshot) trained one tiny epoch."""
    out = tmp_path_factory.mktemp("tiny_teacher") / "teacher"
    proc = run_train("mini_teacher.yaml", noise_corpus, out, "--snapshot_interval=1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def copy_corpus(src: Path, dst: Path) -> Path:
    """A private copy of a corpus fixture, to damage."""
    import shutil

    shutil.copytree(src, dst)
    return dst


def edit_manifest(csv: Path, uid: str, **values):
    """Set columns of row ``uid`` in a manifest."""
    from speechbrain_cald.data.manifest import read_manifest

    rows = read_manifest(str(csv))
    for row in rows:
        if row["ID"] == uid:
            row.update(values)
    write_manifest(str(csv), rows)


@pytest.fixture
def recipe_module():
    """Import a file of the mini ASR recipe (its folder on sys.path for ``from train import``), undone after."""
    import importlib.util

    added, before = str(MINI_ASR), set(sys.modules)
    sys.path.insert(0, added)

    def load(name):
        spec = importlib.util.spec_from_file_location(f"mini_asr_{name}", MINI_ASR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    yield load
    sys.path.remove(added)
    for name in set(sys.modules) - before:
        if name in ("train",) or name.startswith("mini_asr_"):
            del sys.modules[name]


@pytest.fixture
def mini():
    """The helpers above for test modules (conftest.py cannot be imported under --import-mode=importlib)."""
    from types import SimpleNamespace

    return SimpleNamespace(RATE=RATE, MINI_ASR=MINI_ASR, TINY_MODEL=TINY_MODEL, TINY_STUDENT=TINY_STUDENT,
                           run_train=run_train, train_args=train_args, copy_corpus=copy_corpus, edit_manifest=edit_manifest,
                           recipe_env=recipe_env, write_noise_corpus=write_noise_corpus)


@pytest.fixture
def tiny_roberta(tiny_text_model):
    """A tiny random RoBERTa + its tokenizer (tests/conftest.py's ``tiny_text_model``; text recipes)."""
    return tiny_text_model("roberta")


@pytest.fixture(scope="session")
def tiny_pythia(tmp_path_factory):
    """A random 2-layer GPT-NeoX (hidden 32) with a BPE tokenizer, saved as a checkpoint folder (LM recipes)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from speechbrain_cald.data.bpe import train_bpe_tokenizer

    sys.path.insert(0, str(Path(__file__).parent))
    from lm_corpus import lm_documents

    folder = tmp_path_factory.mktemp("pythia-tiny")
    tokenizer = train_bpe_tokenizer(lm_documents(200), 320, str(folder))
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, bos_token_id=0, eos_token_id=0,
    )
    GPTNeoXForCausalLM(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory):
    """A random 2-layer Whisper of tiny.en's width (384, 6 heads) as a transformers folder (Whisper recipes)."""
    from speechbrain_cald.testing.whisper import write_tiny_whisper

    return write_tiny_whisper(str(tmp_path_factory.mktemp("whisper-tiny")), d_model=384, heads=6)[1]
