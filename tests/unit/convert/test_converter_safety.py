"""The converter loses nothing (issue 16's probes): `convert D D` overwrote the teacher in place
(exit 0); BERT weights under a wav2vec2 config converted with every weight random; an already
converted student was converted again (mixers dropped, attention re-initialised at random)."""

import shutil
import subprocess
import sys

import pytest
import torch

from speechbrain_cald.convert import load_teacher
from speechbrain_cald.convert.__main__ import main

W2V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
           conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
           feat_extract_norm="layer", vocab_size=12)
OPTIONS = ["--mixer-option", "d_state=8", "--mixer-option", "headdim=8", "--mixer-option", "chunk_size=4"]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    from transformers import BertConfig, BertModel, Wav2Vec2Config, Wav2Vec2ForCTC

    root = tmp_path_factory.mktemp("teachers")
    torch.manual_seed(0)
    Wav2Vec2ForCTC(Wav2Vec2Config(**W2V)).save_pretrained(root / "w2v")
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         vocab_size=60)).save_pretrained(root / "bert")
    (root / "mixed").mkdir()
    shutil.copy(root / "w2v" / "config.json", root / "mixed" / "config.json")
    shutil.copy(root / "bert" / "model.safetensors", root / "mixed" / "model.safetensors")
    return root


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_same_folder_or_inside_it_is_refused_and_the_teacher_untouched(teachers, tmp_path):
    teacher = tmp_path / "t"
    shutil.copytree(teachers / "w2v", teacher)
    before = _files(teacher)
    for student in (teacher, teacher / "student", tmp_path / "t" / "." ):
        with pytest.raises(SystemExit) as err:
            main([str(teacher), str(student), *OPTIONS])
        assert "STUDENT_DIR" in str(err.value) and "teacher" in str(err.value)
    assert _files(teacher) == before
    # the CLI exits non-zero with the message
    out = subprocess.run([sys.executable, "-m", "speechbrain_cald.convert", str(teacher), str(teacher), *OPTIONS],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "the student would overwrite the teacher" in out.stderr


def test_an_existing_model_in_the_student_folder_needs_overwrite(teachers, tmp_path):
    student = tmp_path / "s"
    assert main([str(teachers / "w2v"), str(student), *OPTIONS]) == 0
    with pytest.raises(SystemExit, match="already holds a model .*--overwrite"):
        main([str(teachers / "w2v"), str(student), *OPTIONS])
    assert main([str(teachers / "w2v"), str(student), *OPTIONS, "--overwrite"]) == 0


def test_weights_of_another_model_are_refused(teachers):
    with pytest.raises(ValueError) as err:
        load_teacher(teachers / "mixed")
    message = str(err.value)
    assert "the weights do not fit config.json (Wav2Vec2ForCTC)" in message
    assert "weights of its encoder layers are missing" in message and "encoder.layer." in message  # BERT's names
    # a pretrained encoder without the task head is fine: the head is trained
    from transformers import Wav2Vec2Model

    Wav2Vec2Model.from_pretrained(teachers / "w2v").save_pretrained(teachers / "w2v_base")
    assert type(load_teacher(teachers / "w2v_base", model_class="Wav2Vec2ForCTC")).__name__ == "Wav2Vec2ForCTC"


def test_a_converted_student_is_not_a_teacher(teachers, tmp_path):
    student = tmp_path / "s"
    assert main([str(teachers / "w2v"), str(student), *OPTIONS]) == 0
    with pytest.raises(ValueError, match="holds a converted student .*load_student"):
        main([str(student), str(tmp_path / "again"), *OPTIONS])
    assert not (tmp_path / "again").exists()
