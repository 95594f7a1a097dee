"""The espeak-ng mini corpus: determinism, unseen test voices, long-form, LibriVox, units."""

import filecmp
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from speechbrain_cald.data import espeak
from speechbrain_cald.data.librivox import prepare_librivox
from speechbrain_cald.data.manifest import read_manifest
from speechbrain_cald.data.mini_corpus import MiniCorpusConfig, prepare_mini_corpus, utterance_specs
from speechbrain_cald.data.units import build_char_units, load_char_units
from speechbrain_cald.data.vocabulary import vocabulary

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)")

TINY = dict(n_train=6, n_valid=2, n_test=5, longform_seconds=[4.0, 6.0], longform_per_duration=1)


def _all_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@needs_espeak
def test_same_bytes_twice(tmp_path):
    cfg = MiniCorpusConfig(**TINY)
    a, b = tmp_path / "a", tmp_path / "b"
    prepare_mini_corpus(str(a), cfg, workers=2)
    prepare_mini_corpus(str(b), cfg, workers=1)  # thread count must not matter
    files = _all_files(a)
    assert files == _all_files(b)
    assert len([f for f in files if f.endswith(".wav")]) == 6 + 2 + 5 + 2
    mismatch = [f for f in files if not filecmp.cmp(a / f, b / f, shallow=False)]
    assert mismatch == []


@needs_espeak
def test_audio_format_and_manifest(tmp_path):
    paths = prepare_mini_corpus(str(tmp_path), MiniCorpusConfig(**TINY))
    rows = read_manifest(paths["train"])
    assert list(rows[0]) == ["ID", "duration", "wav", "spk_id", "wrd"]
    for row in rows:
        audio, sr = sf.read(row["wav"].replace("$data_root", str(tmp_path)), dtype="int16")
        info = sf.info(row["wav"].replace("$data_root", str(tmp_path)))
        assert (sr, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(len(audio) / sr - float(row["duration"])) < 1e-3
        assert set(row["wrd"].split()) <= set(vocabulary())


@needs_espeak
def test_longform_joins_test_utterances(tmp_path):
    paths = prepare_mini_corpus(str(tmp_path), MiniCorpusConfig(**TINY))
    test_texts = {r["wrd"] for r in read_manifest(paths["test"])}
    long_rows = read_manifest(paths["longform"])
    assert [r["ID"] for r in long_rows] == ["long_004s_0", "long_006s_0"]
    for row, target in zip(long_rows, (4.0, 6.0)):
        assert float(row["duration"]) >= target  # utterances are added until the target is reached
        pieces = [t for t in test_texts if t in row["wrd"]]
        # the transcript is made of whole test transcripts, nothing else
        assert pieces and sum(len(p.split()) for p in pieces) >= len(row["wrd"].split())


@needs_espeak
def test_changed_config_rewrites_and_same_config_skips(tmp_path):
    cfg = MiniCorpusConfig(**TINY)
    prepare_mini_corpus(str(tmp_path), cfg)
    wav = tmp_path / "wav" / "train" / "train_00000.wav"
    mtime = wav.stat().st_mtime_ns
    prepare_mini_corpus(str(tmp_path), cfg)
    assert wav.stat().st_mtime_ns == mtime  # skipped
    prepare_mini_corpus(str(tmp_path), MiniCorpusConfig(**{**TINY, "seed": 7}))
    assert wav.stat().st_mtime_ns != mtime


def test_test_and_valid_voices_unseen_in_training():
    specs = utterance_specs(MiniCorpusConfig(n_train=400, n_valid=60, n_test=80))
    variants = {s: {u["voice"].split("+")[1] for u in specs[s]} for s in specs}
    voices = {s: {u["voice"] for u in specs[s]} for s in specs}
    assert variants["test"].isdisjoint(variants["train"]) and variants["valid"].isdisjoint(variants["train"])
    assert voices["test"].isdisjoint(voices["train"])
    assert len(variants["train"]) >= 8 and len(variants["test"]) >= 2
    # every accent occurs in training, so the test shift is the voice, not the language
    accents = {s: {u["voice"].split("+")[0] for u in specs[s]} for s in specs}
    assert accents["test"] <= accents["train"]


@needs_espeak
def test_unknown_or_shared_variant_is_an_error(tmp_path):
    bad = MiniCorpusConfig(**TINY)
    bad.variants = {**bad.variants, "test": ("no_such_variant",)}
    with pytest.raises(ValueError, match="no_such_variant"):
        prepare_mini_corpus(str(tmp_path / "a"), bad)
    shared = MiniCorpusConfig(**TINY)
    shared.variants = {**shared.variants, "test": ("m1",)}
    with pytest.raises(ValueError, match="both"):
        prepare_mini_corpus(str(tmp_path / "b"), shared)


def test_missing_espeak_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("ESPEAK_NG", str(tmp_path / "nope"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(espeak.EspeakMissingError, match="apt-get install espeak-ng"):
        espeak.espeak_binary()


def test_resample_is_deterministic_and_band_limited():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(22050)
    y1, y2 = espeak.resample(x, 22050, 16000), espeak.resample(x.copy(), 22050, 16000)
    assert y1.shape == (16000,) and np.array_equal(y1, y2)
    tone = np.sin(2 * np.pi * 10000 * np.arange(22050) / 22050)  # above the new Nyquist (8 kHz)
    assert np.abs(espeak.resample(tone, 22050, 16000)[200:-200]).max() < 0.05


def test_librivox_set_from_a_pocketsphinx_style_folder(tmp_path):
    src = tmp_path / "librivox"
    src.mkdir()
    (src / "transcription").write_text("<s> he was not an ill disposed young man </s> (utt-1)\n<s> SO IT WAS </s> (utt-2)\n")
    for uid, sr in (("utt-1", 16000), ("utt-2", 8000)):
        sf.write(src / f"{uid}.wav", (0.1 * np.sin(np.arange(sr) / 10)).astype(np.float32), sr)
    path = prepare_librivox(str(tmp_path / "data"), str(src))
    rows = read_manifest(path)
    assert [r["wrd"] for r in rows] == ["he was not an ill disposed young man", "so it was"]
    assert [float(r["duration"]) for r in rows] == [1.0, 1.0]
    for r in rows:
        assert sf.info(r["wav"].replace("$data_root", str(tmp_path / "data"))).samplerate == 16000
    assert prepare_librivox(str(tmp_path / "data"), str(tmp_path / "absent")) is None


def test_char_units_blank_first_and_deterministic(tmp_path):
    from speechbrain_cald.data.manifest import write_manifest

    csv = tmp_path / "t.csv"
    write_manifest(str(csv), [dict(ID=str(i), duration=1, wav="x", spk_id="s", wrd=w) for i, w in enumerate(["the cat", "a dog"])])
    enc = build_char_units([str(csv)], str(tmp_path / "u1.txt"), alphabet="")
    build_char_units([str(csv)], str(tmp_path / "u2.txt"), alphabet="")
    assert (tmp_path / "u1.txt").read_bytes() == (tmp_path / "u2.txt").read_bytes()
    assert enc.ind2lab[0] == "<blank>" and enc.ind2lab[1] == " "
    assert [enc.ind2lab[i] for i in range(2, len(enc))] == sorted(set("thecatadog") - {" "})
    again = load_char_units(str(tmp_path / "u1.txt"))
    assert "".join(again.decode_ndim(again.encode_sequence(list("a cat")))) == "a cat"
    full = build_char_units([str(csv)], str(tmp_path / "u3.txt"))  # letters missing from the data are kept
    assert len(full) == 1 + 27 and "z" in full.lab2ind
    with pytest.raises(FileNotFoundError, match="stage 1"):
        load_char_units(str(tmp_path / "missing.txt"))
