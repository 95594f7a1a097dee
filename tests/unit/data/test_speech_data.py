"""Shared speech data pieces: audio reading (FLAC, NIST SPHERE, segments), datasets, tokens."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_cald.data.audio import AudioFormatError, read_audio, speech_datasets
from speechbrain_cald.data.manifest import write_manifest
from speechbrain_cald.data.tokens import build_tokens, load_tokens
from speechbrain_cald.testing.speech import write_sphere
from float_tolerance import ELEMENTWISE, assert_close


def test_sphere_segments_read_exactly_the_samples_between_the_times(tmp_path):
    samples = (np.arange(48000) % 2000 - 1000).astype(np.int16)
    path = str(tmp_path / "talk.sph")
    write_sphere(path, samples)
    seg = read_audio(path, start=1.25, stop=2.5)
    assert_close(seg, torch.from_numpy(samples[20000:40000] / 32768.0).float(), factor=ELEMENTWISE)  # int16 / 2**15
    assert read_audio(path).shape == (48000,)


def test_wrong_rate_channels_or_empty_segment_are_errors(tmp_path):
    sf.write(tmp_path / "st.flac", np.zeros((1600, 2)), 16000)
    with pytest.raises(AudioFormatError, match=r"st\.flac: channels: expected 1 \(mono\), found 2"):
        read_audio(str(tmp_path / "st.flac"), 16000)
    sf.write(tmp_path / "a.wav", np.zeros(800), 8000)
    with pytest.raises(AudioFormatError, match="expected 16000 Hz, found 8000 Hz"):
        read_audio(str(tmp_path / "a.wav"), 16000)
    with pytest.raises(AudioFormatError, match="empty segment"):
        read_audio(str(tmp_path / "a.wav"), start=0.5, stop=0.5, sample_rate=None)


def test_datasets_read_whole_files_and_segments(tmp_path):
    sf.write(tmp_path / "a.flac", np.full(16000, 0.25), 16000)
    write_manifest(str(tmp_path / "w.csv"), [dict(ID="a", duration=1.0, wav="$data_root/a.flac", spk_id="s", wrd="hi")])
    seg = tmp_path / "s.csv"
    seg.write_text("ID,duration,wav,start,stop,spk_id,wrd\nb,0.5,$data_root/a.flac,0.25,0.75,s,yo\n")
    data = speech_datasets({"w": str(tmp_path / "w.csv"), "s": str(seg)}, str(tmp_path))
    assert data["w"][0]["sig"].shape == (16000,) and data["s"][0]["sig"].shape == (8000,)


def test_unigram_tokens_round_trip_and_keep_blank_at_zero(tmp_path):
    words = "the cat sat on the mat a dog ran in the park she reads a book at night".split()
    rows = [dict(ID=str(i), duration=1, wav="x", spk_id="s", wrd=" ".join(words[i:i + 5])) for i in range(14)]
    write_manifest(str(tmp_path / "t.csv"), rows)
    tok = build_tokens(str(tmp_path / "tok"), "unigram", str(tmp_path / "t.csv"), vocab_size=30)
    assert len(tok) == 30 and tok.blank_index == 0 and tok.labels[0] == "<unk>"
    assert tok.decode(tok.encode("the cat sat")) == "the cat sat"
    assert any(label.startswith("\u2581") for label in tok.labels)
    again = build_tokens(str(tmp_path / "tok"), "unigram", str(tmp_path / "t.csv"), vocab_size=30)
    assert again.labels == tok.labels and load_tokens(str(tmp_path / "tok")).kind == "unigram"
    chars = build_tokens(str(tmp_path / "ch"), "char", str(tmp_path / "t.csv"))
    assert chars.decode(chars.encode("a dog")) == "a dog"
    with pytest.raises(KeyError, match="not in the inventory"):
        chars.encode("A DOG")


def test_speech_manifests_are_validated_before_training(tmp_path):
    from speechbrain_cald.data.validate import ManifestError
    from speechbrain_cald.tasks.ctc_brain import validate_speech_manifests

    sf.write(tmp_path / "ok.flac", np.zeros(16000), 16000)
    sf.write(tmp_path / "st.flac", np.zeros((16000, 2)), 16000)
    write_manifest(str(tmp_path / "w.csv"), [
        dict(ID="a", duration=1.0, wav="$data_root/ok.flac", spk_id="s", wrd="HI"),
        dict(ID="b", duration=1.0, wav="$data_root/st.flac", spk_id="s", wrd="HI"),
        dict(ID="c", duration=1.0, wav="$data_root/gone.flac", spk_id="s", wrd="HI")])
    (tmp_path / "s.csv").write_text("ID,duration,wav,start,stop,spk_id,wrd\n"
                                    "x,0.5,$data_root/ok.flac,0.25,0.75,s,HI\ny,0.5,$data_root/ok.flac,0.75,0.25,s,HI\n")
    with pytest.raises(ManifestError) as err:
        validate_speech_manifests({"w": str(tmp_path / "w.csv"), "s": str(tmp_path / "s.csv")}, str(tmp_path), 16000)
    text = str(err.value)
    assert "st.flac: channels" in text and "gone.flac: file does not exist" in text
    with pytest.raises(ManifestError, match="start 0.75 s is not before stop 0.25 s"):
        validate_speech_manifests({"s": str(tmp_path / "s.csv")}, str(tmp_path), 16000)
