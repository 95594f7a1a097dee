"""The TED-LIUM ASR recipe on a tiny corpus in the distributed layouts (espeak-ng speech, NIST SPHERE talks + STM).

End to end (stages 0-4) with a tiny random WavLM teacher, logits distillation
and every test talk decoded whole; the preparation (release 3 and 2 layouts,
STM segments, dropped ``ignore_time_segment_in_scoring`` lines, TED-LIUM's
tokenisation) against what the generator wrote.
"""

import shutil

import numpy as np
import pytest

from speechbrain_cald.testing.recipes import (EVAL_ARGS, ROOT, STUDENT_ARGS, TEACHER_ARGS,
                                              check_exported_folder_transcribes, read_csv, results_rows, run_recipe)

RECIPE_DIR = ROOT / "recipes" / "TEDLIUM" / "ASR"
TALKS = {"train": 4, "dev": 2, "test": 2}

espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)")


def _expected(texts):
    from tedlium_prepare import normalize_text

    return {talk: [normalize_text(t) for t in segs if normalize_text(t)] for talk, segs in texts.items()}


@pytest.mark.slow
@espeak
def test_stages_0_to_4_end_to_end_with_a_wavlm_teacher(tmp_path, monkeypatch):
    from speechbrain_cald.testing.speech import save_tiny_speech_model, write_tedlium

    monkeypatch.syspath_prepend(str(RECIPE_DIR))
    written = write_tedlium(str(tmp_path / "TEDLIUM_release-3"), TALKS, release=3)
    save_tiny_speech_model(str(tmp_path / "wavlm"), "wavlm")
    exp, results = tmp_path / "exp", tmp_path / "RESULTS.md"
    log = run_recipe("TEDLIUM/ASR", tmp_path, "--data_folder", str(tmp_path / "TEDLIUM_release-3"), "--pretrained_dir",
                     str(tmp_path / "wavlm"), "--exp", str(exp), "--results_md", str(results),
                     "--teacher_args", TEACHER_ARGS, "--student_args", STUDENT_ARGS, "--eval_args", EVAL_ARGS).stdout
    for stage in range(5):
        assert f"== stage {stage}:" in log
    # stage 0: exactly the scored segments, in talk order, with normalised words
    for split, texts in written.items():
        rows = read_csv(exp / "data" / f"{split}.csv")
        expected = _expected(texts)
        assert sum(map(len, expected.values())) == len(rows)
        for talk, words in expected.items():
            assert [r["wrd"] for r in rows if r["ID"].startswith(talk + "-")] == words
        talks = {r["ID"]: r["wrd"] for r in read_csv(exp / "data" / f"{split}_talks.csv")}
        assert talks == {t: " ".join(w) for t, w in expected.items()}
    assert "logits" in (exp / "tedlium_mamba_target" / "train_log.txt").read_text()  # alpha_logits 1
    md = results.read_text()
    for model in ("teacher", "mamba_target", "linformer_target"):
        rows = results_rows(md, model)
        assert len(rows) == 4, model  # LM, greedy, whole talks, speed
        assert "2 of 2" in rows[2]  # both test talks decoded whole
    assert "test_talks: each recording decoded whole, in one pass" in md
    text = check_exported_folder_transcribes(exp / "tedlium_linformer_target" / "inference", tmp_path / "s",
                                             next((tmp_path / "TEDLIUM_release-3" / "legacy" / "test" / "sph").glob("*.sph")))
    assert set(text) <= set(" abcdefghijklmnopqrstuvwxyz'")


@espeak
@pytest.mark.parametrize("release", [3, 2])
def test_preparation_cuts_scored_segments_from_sphere_talks(tmp_path, monkeypatch, release):
    from speechbrain_cald.data.audio import read_audio
    from speechbrain_cald.testing.speech import write_tedlium

    monkeypatch.syspath_prepend(str(RECIPE_DIR))
    from tedlium_prepare import prepare_tedlium

    root = tmp_path / "TED"
    written = write_tedlium(str(root), {"test": 3}, release=release)
    out = prepare_tedlium(str(root), str(tmp_path / "data"), ["test"])
    rows = read_csv(out["test"])
    expected = _expected(written["test"])
    assert [r["wrd"] for r in rows] == [w for talk in sorted(expected) for w in expected[talk]]
    base = "legacy/test" if release == 3 else "test"
    for r in rows:
        talk = r["ID"].rsplit("-", 2)[0]
        assert r["wav"] == f"$data_root/{base}/sph/{talk}.sph"
        stm = (root / base / "stm" / f"{talk}.stm").read_text()
        assert f" {r['start']} {r['stop']} " in stm  # the STM's own times
        seg = read_audio(r["wav"].replace("$data_root", str(root)), 16000, start=float(r["start"]), stop=float(r["stop"]))
        assert abs(len(seg) / 16000 - float(r["duration"])) < 1e-3 and float(np.abs(seg).max()) > 0.01  # speech, not gap


def test_tokenisation_and_missing_split(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPE_DIR))
    from tedlium_prepare import normalize_text, prepare_tedlium

    assert normalize_text("and it 's <unk> that we 've {NOISE} seen(2) <sil> do n't") == "and it's that we've seen don't"
    assert normalize_text("<unk> <unk>") == ""
    (tmp_path / "legacy" / "train" / "sph").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"split 'test'.*legacy/test.*release 3"):
        prepare_tedlium(str(tmp_path), str(tmp_path / "d"), ["test"])


def _hand_written_talk(root, lines, samples=142385):
    """One release-3 dev talk as distributed: ``legacy/dev/{sph,stm}``, STM lines as given."""
    from speechbrain_cald.testing.speech import write_sphere

    for sub in ("sph", "stm"):
        (root / "legacy" / "dev" / sub).mkdir(parents=True, exist_ok=True)
    sph = root / "legacy" / "dev" / "sph" / "Talk_2010.sph"
    write_sphere(str(sph), (np.random.default_rng(0).standard_normal(samples) * 3000).astype(np.int16))
    (root / "legacy" / "dev" / "stm" / "Talk_2010.stm").write_text(
        "".join(f"Talk_2010 1 Talk_2010 {line}\n" for line in lines))
    return sph


def test_a_non_numeric_stm_time_names_the_file_and_line(tmp_path, monkeypatch):
    """Issue 24 probe: float('1O.5') raised a bare ValueError with no file."""
    monkeypatch.syspath_prepend(str(RECIPE_DIR))
    from tedlium_prepare import prepare_tedlium

    _hand_written_talk(tmp_path, ["0.00 2.00 <o,f0,male> hello there", "3.00 1O.50 <o,f0,male> good morning"])
    stm = tmp_path / "legacy" / "dev" / "stm" / "Talk_2010.stm"
    with pytest.raises(ValueError) as err:
        prepare_tedlium(str(tmp_path), str(tmp_path / "data"), ["dev"])
    assert str(err.value).startswith(f"{stm}:2: STM start and end times must be seconds")
    assert "found '3.00' '1O.50'" in str(err.value)


def test_a_talk_cut_short_is_reported_and_its_segments_refused_before_training(tmp_path, monkeypatch, capfd):
    """Issue 24 probe: a .sph whose header says 142,385 samples and which holds 47,120 gave segments
    shorter than their transcripts (the end clamped to what the file holds), with no warning."""
    monkeypatch.syspath_prepend(str(RECIPE_DIR))
    from tedlium_prepare import prepare_tedlium

    from speechbrain_cald.data.validate import ManifestError, validate_manifests

    sph = _hand_written_talk(tmp_path, ["0.00 2.00 <o,f0,male> hello there", "2.50 8.00 <o,f0,male> good morning"])
    sph.write_bytes(sph.read_bytes()[: 1024 + 2 * 47120])
    out = prepare_tedlium(str(tmp_path), str(tmp_path / "data"), ["dev"])
    err = capfd.readouterr().err
    assert "1 talks whose audio is cut short" in err
    assert f"{sph} (truncated: the header says 142385 samples, the file holds 47120" in err
    with pytest.raises(ManifestError) as refused:
        validate_manifests([out["dev"]], replacements={"data_root": str(tmp_path)}, sample_rate=16000,
                           duration_column=None, progress=False)
    assert {p.kind for p in refused.value.problems} == {"truncated"}
    assert len(read_csv(out["dev"])) == len(refused.value.problems) == 2
