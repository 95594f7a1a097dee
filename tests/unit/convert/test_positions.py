"""Position tables tiled past a BERT / RoBERTa model's learned length (long inputs for BiMamba2 students)."""

import pytest
import torch
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

from speechbrain_cald.convert import to_linear_time
from speechbrain_cald.convert.positions import extend_positions, max_tokens

SIZES = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=50)


def _model(family):
    torch.manual_seed(0)
    if family == "bert":
        return BertModel(BertConfig(max_position_embeddings=12, **SIZES)).eval()
    return RobertaModel(RobertaConfig(max_position_embeddings=14, pad_token_id=1, **SIZES)).eval()


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_short_inputs_unchanged_long_inputs_run(family):
    model = _model(family)
    assert max_tokens(model) == 12
    ids = torch.randint(3, 50, (2, 10))
    mask = torch.tensor([[1] * 10, [1] * 6 + [0] * 4])
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).last_hidden_state
    old = model.embeddings.position_embeddings.weight.detach().clone()
    extend_positions(model, 30)
    assert max_tokens(model) == 30
    new = model.embeddings.position_embeddings.weight
    offset = 2 if family == "roberta" else 0  # RoBERTa: padding_idx 1, positions from 2
    assert torch.equal(new[: offset + 12], old)
    assert torch.equal(new[offset + 12 : offset + 24], old[offset:])  # tiled
    with torch.no_grad():
        after = model(input_ids=ids, attention_mask=mask).last_hidden_state
        assert torch.equal(before, after)
        long = model(input_ids=torch.randint(3, 50, (1, 30))).last_hidden_state
    assert long.shape == (1, 30, 16) and torch.isfinite(long).all()
    extend_positions(model, 20)  # already long enough: nothing changes
    assert max_tokens(model) == 30


def test_bimamba2_student_reads_past_the_teachers_positions():
    student = to_linear_time(_model("roberta"), "bimamba2", d_state=8, headdim=8, chunk_size=4).eval()
    extend_positions(student, 40)
    with torch.no_grad():
        out = student(input_ids=torch.randint(3, 50, (2, 40)), attention_mask=torch.ones(2, 40, dtype=torch.long))
    assert out.last_hidden_state.shape == (2, 40, 16)


def test_not_a_text_model():
    with pytest.raises(TypeError, match="no BERT/RoBERTa-style"):
        extend_positions(torch.nn.Linear(2, 2), 10)
