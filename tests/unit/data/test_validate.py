"""Manifest validation before training: every bad row in one error, good corpora untouched.

Each kind of bad input the reliability probes found (issue 16) is written here
as a real file: an 8 kHz wav, a stereo wav, a zero-sample wav, a wav truncated
with its header intact, a truncated FLAC, a transcript with characters outside
the units, an empty transcript.
"""

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_cald.data.audio import AudioFileError, read_audio
from speechbrain_cald.data.validate import ManifestError, validate_manifest, validate_manifests

RATE = 16000


def _wav(path, seconds=0.5, rate=RATE, channels=1, fmt=None):
    n = int(seconds * rate)
    data = 0.1 * np.random.default_rng(0).standard_normal((n, channels) if channels > 1 else n)
    sf.write(path, data, rate, subtype="PCM_16", format=fmt)
    return path


def _truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _manifest(path, rows, header="ID,duration,wav,wrd"):
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def corpus(tmp_path):
    """A good manifest and a bad one holding one row of each kind of fault."""
    wav = tmp_path / "wav"
    wav.mkdir()
    good = [(f"g{i}", "0.500", f"$data_root/wav/g{i}.wav", "hello world") for i in range(3)]
    for i in range(3):
        _wav(wav / f"g{i}.wav")
    _wav(wav / "rate.wav", rate=8000)
    _wav(wav / "stereo.wav", channels=2)
    _wav(wav / "empty.wav", seconds=0)
    _truncate(_and_return(wav / "cut.wav"))
    _wav(wav / "cut.flac", fmt="FLAC")
    _truncate(wav / "cut.flac")
    (wav / "text.wav").write_bytes(b"this is not audio at all" * 10)
    _wav(wav / "oov.wav")
    _wav(wav / "mute.wav")
    bad = [
        ("rate", "0.500", "$data_root/wav/rate.wav", "hello"),
        ("stereo", "0.500", "$data_root/wav/stereo.wav", "hello"),
        ("empty", "0.000", "$data_root/wav/empty.wav", "hello"),
        ("cut", "0.500", "$data_root/wav/cut.wav", "hello"),
        ("cutflac", "0.500", "$data_root/wav/cut.flac", "hello"),
        ("notaudio", "0.500", "$data_root/wav/text.wav", "hello"),
        ("missing", "0.500", "$data_root/wav/nowhere.wav", "hello"),
        ("oov", "0.500", "$data_root/wav/oov.wav", "hello 4 caf\u00e9"),
        ("mute", "0.500", "$data_root/wav/mute.wav", " "),
        ("rate", "0.500", "$data_root/wav/g0.wav", "hello"),  # duplicate ID
    ]
    return tmp_path, _manifest(tmp_path / "good.csv", good), _manifest(tmp_path / "bad.csv", bad)


def _and_return(path):
    _wav(path)
    return path


CHECKS = dict(sample_rate=RATE, text_column="wrd", text_units=set(" abcdefghijklmnopqrstuvwxyz"),
              text_units_name="units.txt", progress=False)


def test_good_manifest_passes(corpus):
    root, good, _ = corpus
    assert validate_manifests([good], replacements={"data_root": str(root)}, **CHECKS) == 3


def test_every_bad_row_is_named_with_line_file_expected_and_found(corpus):
    root, good, bad = corpus
    with pytest.raises(ManifestError) as err:
        validate_manifests({"train": good, "valid": bad}, replacements={"data_root": str(root)}, **CHECKS)
    found = {(p.row_id, p.kind): p for p in err.value.problems}
    assert set(found) == {
        ("rate", "sample rate"), ("stereo", "channels"), ("empty", "empty"), ("cut", "length"), ("cut", "truncated"),
        ("cutflac", "truncated or corrupt"), ("notaudio", "unreadable"),
        ("missing", "file does not exist"), ("oov", "transcript"), ("mute", "transcript"), ("rate", "ID"),
    }
    message = str(err.value)
    assert message.startswith("10 of 13 manifest rows are unusable")
    assert f"{bad}:2 (ID rate) {root}/wav/rate.wav: sample rate: expected 16000 Hz, found 8000 Hz" in message
    assert "channels: expected 1 (mono), found 2" in message
    assert f"{bad}:5 (ID cut)" in message and "the duration column says 0.500 s, the audio holds 0.249 s" in message
    assert "characters outside units.txt: '4' (U+0034) '\u00e9' (U+00E9)" in message
    assert "transcript: empty" in message
    assert f"{bad}:11 (ID rate): ID: duplicate of line 2" in message
    assert "unreadable: soundfile cannot open it as audio (Format not recognised.)" in message


def test_text_and_audio_checks_are_optional(corpus):
    root, _, bad = corpus
    problems, rows = validate_manifest(bad, {"data_root": str(root)}, audio_column=None, duration_column=None)
    assert rows == 10 and [p.kind for p in problems] == ["ID"]
    problems, _ = validate_manifest(bad, {"data_root": str(root)}, sample_rate=None, channels=None,
                                    text_column="wrd", allow_empty_text=True)
    assert "sample rate" not in {p.kind for p in problems} and ("mute", "transcript") not in {
        (p.row_id, p.kind) for p in problems}


def test_missing_columns_variables_and_manifest(tmp_path):
    csv = _manifest(tmp_path / "m.csv", [("a", "1.0", "$nope/a.wav")], header="ID,duration,wav")
    problems, _ = validate_manifest(csv, text_column="wrd")
    assert "columns: expected ['wrd']" in problems[0].what
    problems, _ = validate_manifest(csv, {"data_root": "x"})
    assert problems[0].what.startswith("variable: $nope has no value")
    problems, rows = validate_manifest(str(tmp_path / "none.csv"))
    assert rows == 0 and "does not exist" in problems[0].what


def test_segments_and_recipe_row_checks(tmp_path):
    _wav(tmp_path / "long.wav", seconds=1.0)
    rows = [("s1", "0.500", f"{tmp_path}/long.wav", 0, 8000, "play"),
            ("s2", "0.500", f"{tmp_path}/long.wav", 12000, 20000, "stop"),
            ("s3", "0.250", f"{tmp_path}/long.wav", 0, 8000, "nope")]
    csv = _manifest(tmp_path / "seg.csv", rows, header="ID,duration,wav,start,stop,intent")
    intents = {"play", "stop"}

    def intent_known(row):
        return None if row["intent"] in intents else f"intent: {row['intent']!r} not in the label set {sorted(intents)}"

    problems, _ = validate_manifest(csv, sample_rate=RATE, segment_columns=("start", "stop"), segment_unit="samples",
                                    row_checks=[intent_known])
    assert [(p.row_id, p.kind) for p in problems] == [("s2", "segment"), ("s3", "length"), ("s3", "intent")]
    # seconds (data.audio.speech_datasets' convention), an empty stop = the end of the file
    rows = [("s1", "0.500", f"{tmp_path}/long.wav", "0.0", "0.5"), ("s2", "0.250", f"{tmp_path}/long.wav", "0.75", ""),
            ("s3", "0.500", f"{tmp_path}/long.wav", "0.75", "1.25")]
    csv = _manifest(tmp_path / "sec.csv", rows, header="ID,duration,wav,start,stop")
    problems, _ = validate_manifest(csv, sample_rate=RATE, segment_columns=("start", "stop"))
    assert [(p.row_id, p.kind) for p in problems] == [("s3", "segment")]
    assert "expected 0 <= start < stop <= 1 (the file's end), found 0.75..1.25" in problems[0].what
    # a manifest without the columns: whole files
    problems, _ = validate_manifest(str(tmp_path / "seg.csv"), sample_rate=RATE, segment_columns=("begin", "end"),
                                    duration_column=None)
    assert problems == []


def test_a_sphere_cut_short_is_refused_by_comparing_its_header_with_its_content(tmp_path):
    """Issue 24 probe: a TED-LIUM talk whose header says 142,385 samples and whose file holds 47,120
    read as a shorter talk, its segments cut short with no warning (no duration column to compare)."""
    from speechbrain_cald.testing.speech import write_sphere

    talk = tmp_path / "talk.sph"
    write_sphere(str(talk), (np.random.default_rng(0).standard_normal(142385) * 3000).astype(np.int16))
    whole = talk.read_bytes()
    talk.write_bytes(whole[: 1024 + 2 * 47120])
    rows = [("talk-0000000-0000200", f"{talk}", "0.00", "2.00", "hello"),
            ("talk-0000500-0000800", f"{talk}", "5.00", "8.00", "world")]
    csv = _manifest(tmp_path / "dev.csv", rows, header="ID,wav,start,stop,wrd")
    problems, _ = validate_manifest(csv, sample_rate=RATE, duration_column=None)
    assert [(p.row_id, p.kind) for p in problems] == [(r[0], "truncated") for r in rows]
    assert problems[0].what.startswith("truncated: the header says 142385 samples, the file holds 47120 (33%")
    talk.write_bytes(whole)  # the whole file passes
    assert validate_manifest(csv, sample_rate=RATE, duration_column=None)[0] == []


def test_long_lists_go_to_the_report_file(tmp_path):
    csv = _manifest(tmp_path / "m.csv", [(f"u{i}", "1.0", f"{tmp_path}/u{i}.wav", "x") for i in range(7)])
    report = tmp_path / "out" / "manifest_problems.txt"
    with pytest.raises(ManifestError) as err:
        validate_manifests([csv], listed=3, report_file=str(report), progress=False)
    assert "... and 4 more (all of them in" in str(err.value)
    assert len(report.read_text().splitlines()) == 7


def test_read_audio_names_the_file_for_stereo_and_wrong_rate(tmp_path):
    stereo = _wav(tmp_path / "s.wav", channels=2)
    with pytest.raises(AudioFileError, match=r"s\.wav: channels: expected 1 \(mono\), found 2"):
        read_audio(str(stereo), RATE)
    low = _wav(tmp_path / "l.wav", rate=8000)
    with pytest.raises(AudioFileError, match=r"l\.wav: sample rate: expected 16000 Hz, found 8000 Hz"):
        read_audio(str(low), RATE)
    # the same samples SpeechBrain's reader gives, for a plain file and a segment
    from speechbrain.dataio.dataio import read_audio as sb_read_audio

    good = str(_wav(tmp_path / "g.wav"))
    assert torch.equal(read_audio(good, RATE), sb_read_audio(good))
    seg = {"file": good, "start": 100, "stop": 900}
    assert torch.equal(read_audio(seg, RATE), sb_read_audio(seg))
