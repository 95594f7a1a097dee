"""VoxCeleb1 identification preparation on the distributed layout: exact manifests, missing files, errors."""

import os
import shutil

import pytest

from speechbrain_cald.data.labels import UnseenLabelError
from speechbrain_cald.data.manifest import read_manifest
from speechbrain_cald.data.preparation import CorpusError
from speechbrain_cald.testing.slurp_voxceleb1 import manifest_pairs

SPLIT_NAMES = {"1": "train", "2": "dev", "3": "test"}


def test_manifests_follow_the_split_list(voxceleb1_prepare, voxceleb1_corpus, tmp_path):
    root, entries = voxceleb1_corpus
    paths = voxceleb1_prepare.prepare_voxceleb1(str(root), str(tmp_path / "data"))
    assert {k: os.path.basename(v) for k, v in paths.items()} == {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"}
    for code, split in SPLIT_NAMES.items():
        expected = sorted((e["path"], e["speaker"]) for e in entries if e["split"] == code)
        assert manifest_pairs(paths[split], root) == expected
    row = read_manifest(paths["dev"])[0]
    speaker, video, utt = row["wav"].split("/")[-3:]
    assert row["ID"] == f"{speaker}--{video}--{utt[:-4]}" and row["label"] == speaker and row["video"] == video
    assert float(row["duration"]) > 2.0


def test_missing_file_is_reported_by_name(voxceleb1_prepare, voxceleb1_corpus, copy_of, tmp_path, capsys):
    root, entries = voxceleb1_corpus
    root = copy_of(root)
    gone = next(e for e in entries if e["split"] == "1")
    os.remove(root / "wav" / gone["relpath"])
    paths = voxceleb1_prepare.prepare_voxceleb1(str(root), str(tmp_path / "data"))
    out = capsys.readouterr().out
    line = [e["relpath"] for e in entries].index(gone["relpath"]) + 1
    n_train = sum(e["split"] == "1" for e in entries)
    assert (f"VoxCeleb1 train: {n_train - 1} of {n_train} listed recordings on disk, 1 missing "
            f"(first: {gone['relpath']}, iden_split.txt line {line})") in out
    assert (tmp_path / "data" / "missing_train.txt").read_text() == f"{gone['relpath']}\tiden_split.txt line {line}\n"
    assert len(read_manifest(paths["train"])) == n_train - 1


def test_split_list_in_meta_and_archives_unpacked_apart(voxceleb1_prepare, voxceleb1_corpus, copy_of, tmp_path):
    root, entries = voxceleb1_corpus
    root = copy_of(root)
    os.makedirs(root / "meta")
    shutil.move(str(root / "iden_split.txt"), str(root / "meta" / "iden_split.txt"))
    os.makedirs(root / "vox1_test_wav" / "wav")
    shutil.move(str(root / "wav" / "id10003"), str(root / "vox1_test_wav" / "wav" / "id10003"))
    paths = voxceleb1_prepare.prepare_voxceleb1(str(root), str(tmp_path / "data"))
    moved = [r for r in read_manifest(paths["test"]) if r["label"] == "id10003"]
    assert len(moved) == 1 and moved[0]["wav"].startswith("$data_root/vox1_test_wav/wav/id10003/")


def test_unseen_speaker_names_the_line(voxceleb1_prepare, voxceleb1_corpus, copy_of, tmp_path):
    root, entries = voxceleb1_corpus
    root = copy_of(root)
    src = root / "wav" / entries[0]["relpath"]
    os.makedirs(root / "wav" / "id10999" / "abcdefghijk")
    shutil.copy(src, root / "wav" / "id10999" / "abcdefghijk" / "00001.wav")
    with open(root / "iden_split.txt", "a") as f:
        f.write("3 id10999/abcdefghijk/00001.wav\n")
    with pytest.raises(UnseenLabelError, match=rf"test: label 'id10999' of iden_split.txt line {len(entries) + 1} "
                                               r"does not occur in the training split"):
        voxceleb1_prepare.prepare_voxceleb1(str(root), str(tmp_path / "data"))


def test_no_split_list_and_no_audio(voxceleb1_prepare, voxceleb1_corpus, copy_of, tmp_path, capsys):
    root = copy_of(voxceleb1_corpus[0])
    os.remove(root / "iden_split.txt")
    assert voxceleb1_prepare.main(["--data_folder", str(root), "--save_folder", str(tmp_path / "d")]) == 1
    assert "no identification split list: looked for" in capsys.readouterr().err
    root2 = copy_of(voxceleb1_corpus[0], "noaudio")
    shutil.rmtree(root2 / "wav")
    with pytest.raises(CorpusError, match=r"VoxCeleb1 train: none of its 12 listed recordings is on disk"):
        voxceleb1_prepare.prepare_voxceleb1(str(root2), str(tmp_path / "data"))


def test_a_file_under_two_split_codes_is_reported_with_both_lines(voxceleb1_prepare, voxceleb1_corpus, copy_of,
                                                                   tmp_path):
    """Issue 24 probe: a file listed as 1 (train) and again as 3 (test) went into both manifests silently."""
    root, entries = voxceleb1_corpus
    root = copy_of(root)
    train = next(e for e in entries if e["split"] == "1")
    with open(root / "iden_split.txt", "a") as f:
        f.write(f"3 {train['relpath']}\n")
    line = [e["relpath"] for e in entries].index(train["relpath"]) + 1
    with pytest.raises(CorpusError) as err:
        voxceleb1_prepare.prepare_voxceleb1(str(root), str(tmp_path / "data"))
    message = str(err.value)
    assert "iden_split.txt: 1 files listed more than once; each file belongs to one split" in message
    assert f"{train['relpath']}: line {line} (1 = train) and line {len(entries) + 1} (3 = test)" in message
    assert not (tmp_path / "data" / "train.csv").exists()
