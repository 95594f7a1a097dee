"""SLURP preparation on a corpus in the distributed layout: exact manifests, missing audio, label errors."""

import json
import os
import shutil

import pytest

from speechbrain_cald.data.labels import UnseenLabelError
from speechbrain_cald.data.manifest import read_manifest
from speechbrain_cald.data.preparation import CorpusError
from speechbrain_cald.testing.slurp_voxceleb1 import manifest_pairs


def _expected(written, split):
    return sorted((w["path"], w["intent"]) for w in written[split])


def test_manifests_hold_every_recording_with_its_intent(slurp_prepare, slurp_corpus, tmp_path):
    root, written = slurp_corpus
    paths = slurp_prepare.prepare_slurp(str(root), str(tmp_path / "data"))
    assert sorted(paths) == ["devel", "test", "train", "train_synthetic"]
    for split in paths:
        assert os.path.basename(paths[split]) == f"{split}.csv"
        assert manifest_pairs(paths[split], root) == _expected(written, split)
    row = read_manifest(paths["test"])[0]
    assert list(row) == slurp_prepare.FIELDS
    assert row["ID"] == f"{row['slurp_id']}_{os.path.splitext(os.path.basename(row['wav']))[0]}"
    assert row["label"] == f"{row['scenario']}_{row['action']}"
    assert not list((tmp_path / "data").glob("missing_*.txt"))


def test_without_synthetic_and_audio_under_audio_folder(slurp_prepare, slurp_corpus, copy_of, tmp_path):
    root = copy_of(slurp_corpus[0])
    os.makedirs(root / "audio")
    for sub in ("slurp_real", "slurp_synth"):
        shutil.move(str(root / sub), str(root / "audio" / sub))
    paths = slurp_prepare.prepare_slurp(str(root), str(tmp_path / "data"), use_synthetic=False)
    assert sorted(paths) == ["devel", "test", "train"]
    assert not (tmp_path / "data" / "train_synthetic.csv").exists()
    assert read_manifest(paths["train"])[0]["wav"].startswith("$data_root/audio/slurp_real/")
    assert manifest_pairs(paths["devel"], root) == sorted(
        (p.replace(str(slurp_corpus[0]), str(root)).replace("/slurp_real/", "/audio/slurp_real/"), i)
        for p, i in _expected(slurp_corpus[1], "devel"))


def test_missing_recordings_are_counted_and_listed(slurp_prepare, slurp_corpus, copy_of, tmp_path, capsys):
    root, written = slurp_corpus
    root = copy_of(root)
    shutil.rmtree(root / "slurp_synth")  # a user with the real audio only
    gone = written["train"][0]["file"]
    os.remove(root / "slurp_real" / gone)
    paths = slurp_prepare.prepare_slurp(str(root), str(tmp_path / "data"))
    out = capsys.readouterr().out
    n_train, n_syn = len(written["train"]), len(written["train_synthetic"])
    assert f"SLURP train: {n_train - 1} of {n_train} listed recordings on disk, 1 missing (first: {gone}" in out
    assert f"SLURP train_synthetic: 0 of {n_syn} listed recordings on disk, {n_syn} missing" in out
    listed = (tmp_path / "data" / "missing_train.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(gone + "\tdataset/slurp/train.jsonl line ")
    assert len(read_manifest(paths["train"])) == n_train - 1
    assert read_manifest(paths["train_synthetic"]) == []


def test_a_split_without_any_audio_is_an_error(slurp_prepare, slurp_corpus, copy_of, tmp_path):
    root, written = slurp_corpus
    root = copy_of(root)
    for w in written["devel"]:
        os.remove(root / "slurp_real" / w["file"])
    with pytest.raises(CorpusError, match=r"SLURP devel: none of its 8 listed recordings is on disk"):
        slurp_prepare.prepare_slurp(str(root), str(tmp_path / "data"))


def _rewrite_index(root, split, edit):
    path = root / "dataset" / "slurp" / f"{split}.jsonl"
    lines = path.read_text().splitlines()
    lines = edit(lines)
    path.write_text("\n".join(lines) + "\n")


def test_unseen_intent_names_the_record(slurp_prepare, slurp_corpus, copy_of, tmp_path):
    root = copy_of(slurp_corpus[0])

    def relabel_third(lines):
        record = json.loads(lines[2])
        record["intent"] = "takeaway_order"
        lines[2] = json.dumps(record)
        return lines

    _rewrite_index(root, "test", relabel_third)
    slurp_id = json.loads((root / "dataset/slurp/test.jsonl").read_text().splitlines()[2])["slurp_id"]
    with pytest.raises(UnseenLabelError, match=rf"test: label 'takeaway_order' of dataset/slurp/test.jsonl line 3 "
                                               rf"\(slurp_id {slurp_id}\) does not occur in the training split"):
        slurp_prepare.prepare_slurp(str(root), str(tmp_path / "data"))


def test_scenario_and_action_make_the_intent_when_intent_is_absent(slurp_prepare, slurp_corpus, copy_of, tmp_path):
    root = copy_of(slurp_corpus[0])

    def drop_intent(lines):
        out = []
        for line in lines:
            record = json.loads(line)
            del record["intent"]
            out.append(json.dumps(record))
        return out

    for split in ("train", "devel", "test", "train_synthetic"):
        _rewrite_index(root, split, drop_intent)
    paths = slurp_prepare.prepare_slurp(str(root), str(tmp_path / "data"))
    assert manifest_pairs(paths["train"], root) == [
        (p.replace(str(slurp_corpus[0]), str(root)), i) for p, i in _expected(slurp_corpus[1], "train")]


def test_missing_index_and_command_line_errors(slurp_prepare, slurp_corpus, copy_of, tmp_path, capsys):
    root = copy_of(slurp_corpus[0])
    os.remove(root / "dataset" / "slurp" / "devel.jsonl")
    assert slurp_prepare.main(["--data_folder", str(root), "--save_folder", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "no index for split 'devel'" in err and "dataset/slurp/devel.jsonl" in err


def test_skipped_when_current_redone_when_options_change(slurp_prepare, slurp_corpus, tmp_path, capsys):
    root, _ = slurp_corpus
    save = tmp_path / "data"
    slurp_prepare.prepare_slurp(str(root), str(save))
    capsys.readouterr()
    slurp_prepare.prepare_slurp(str(root), str(save))
    assert "up to date" in capsys.readouterr().out
    slurp_prepare.prepare_slurp(str(root), str(save), use_synthetic=False)
    assert "up to date" not in capsys.readouterr().out
