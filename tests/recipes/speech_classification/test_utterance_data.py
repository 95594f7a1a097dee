"""The shared classification data pipeline: random training crops, whole utterances, label ids, label checks."""

import pytest
import torch

from speechbrain_cald.data.labels import build_label_encoder, load_label_encoder, write_label_encoder
from speechbrain_cald.data.manifest import read_manifest
from speechbrain_cald.tasks.utterance import _check_teacher_labels, utterance_dataset


@pytest.fixture
def prepared(voxceleb1_prepare, voxceleb1_corpus, tmp_path):
    root, _ = voxceleb1_corpus
    paths = voxceleb1_prepare.prepare_voxceleb1(str(root), str(tmp_path / "data"))
    encoder = write_label_encoder(str(tmp_path / "data" / "label_encoder.txt"), [paths["train"]])
    return root, paths, encoder


def test_training_crops_and_whole_utterances(prepared):
    root, paths, encoder = prepared
    rows = {r["ID"]: r for r in read_manifest(paths["train"])}
    crops = utterance_dataset([paths["train"]], str(root), encoder, crop_seconds=1.5)
    whole = utterance_dataset([paths["train"]], str(root), encoder)
    torch.manual_seed(0)
    starts = set()
    for i in range(len(crops)):
        item, full = crops[i], whole[i]
        assert abs(full["sig"].shape[0] - float(rows[full["id"]]["duration"]) * 16000) <= 8  # 3 decimals
        assert item["sig"].shape[0] == 24000  # every utterance is longer than the crop
        # the crop is a window of the utterance: find its loudest 256 samples in the whole utterance
        m = int(item["sig"].abs().unfold(0, 256, 256).sum(1).argmax()) * 256
        diff = (full["sig"].unfold(0, 256, 1) - item["sig"][m:m + 256]).abs().sum(1)
        start = int(diff.argmin()) - m
        assert torch.equal(full["sig"][start:start + 24000], item["sig"])
        starts.add(start)
        assert int(item["label_id"]) == encoder.lab2ind[rows[item["id"]]["label"]]
    assert len(starts) > 1  # random windows, not always the start


def test_crop_longer_than_utterance_gives_the_whole_utterance(prepared):
    root, paths, encoder = prepared
    long_crop = utterance_dataset([paths["dev"]], str(root), encoder, crop_seconds=60.0)
    whole = utterance_dataset([paths["dev"]], str(root), encoder)
    assert torch.equal(long_crop[0]["sig"], whole[0]["sig"])


def test_joined_manifests_refuse_repeated_ids(prepared):
    root, paths, encoder = prepared
    with pytest.raises(ValueError, match="occurs in another manifest"):
        utterance_dataset([paths["train"], paths["train"]], str(root), encoder)


def test_student_refuses_a_teacher_of_another_label_set(prepared, tmp_path):
    _, _, encoder = prepared
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    build_label_encoder(["id10001", "id10002"]).save(str(teacher / "label_encoder.txt"))
    hp = {"teacher_folder": str(teacher), "label_encoder_file": str(tmp_path / "data" / "label_encoder.txt")}
    with pytest.raises(ValueError, match="trained on another label set"):
        _check_teacher_labels(hp, encoder)
    load_label_encoder(hp["label_encoder_file"]).save(str(teacher / "label_encoder.txt"))
    _check_teacher_labels(hp, encoder)  # the same labels: fine
