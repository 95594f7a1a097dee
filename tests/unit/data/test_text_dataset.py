"""Tokenised text datasets: truncation counted against the tokenizer itself, padded batches."""

import pytest
import torch
from transformers import AutoTokenizer

from speechbrain_cald.data.text_dataset import TokenizedText, collate_text, label_ids

ROWS = [
    dict(ID="a", text_a="the movie was great fun " * 6, text_b="is this a question ?", label="1"),
    dict(ID="b", text_a="a cat", text_b="the dog ran", label="0"),
    dict(ID="c", text_a="two men are playing guitar " * 8, text_b="the park", label="1"),
]


@pytest.mark.parametrize("family", ["roberta", "bert"])
def test_truncation_is_counted_and_pairs_kept(family, tiny_text_model):
    tok = AutoTokenizer.from_pretrained(tiny_text_model(family), local_files_only=True)
    full = [len(tok(r["text_a"], r["text_b"])["input_ids"]) for r in ROWS]
    limit = 24
    assert sum(n > limit for n in full) == 2  # the test's premise
    data = TokenizedText(ROWS, tok, ["0", "1"], max_length=limit)
    assert data.truncated == 2 and data.full_lengths == full
    assert data.lengths() == [min(n, limit) for n in full]
    assert data.labels == [1, 0, 1]
    short = data[1]
    assert short["input_ids"] == tok("a cat", "the dog ran")["input_ids"]
    if family == "bert":  # segment ids of the pair
        assert short["token_type_ids"] == tok("a cat", "the dog ran")["token_type_ids"] and 1 in short["token_type_ids"]
    else:
        assert short["token_type_ids"] is None
    untruncated = TokenizedText(ROWS, tok, ["0", "1"], max_length=None)
    assert untruncated.truncated == 0 and untruncated.lengths() == full


def test_padded_batch(tiny_text_model):
    tok = AutoTokenizer.from_pretrained(tiny_text_model("bert"), local_files_only=True)
    data = TokenizedText(ROWS, tok, ["0", "1"], max_length=20)
    batch = collate_text(tok.pad_token_id)([data[1], data[0]])
    n_short = len(data[1]["input_ids"])
    assert batch.input_ids.shape == (2, 20) and batch.lengths.tolist() == [n_short, 20]
    assert batch.attention_mask[0].tolist() == [1] * n_short + [0] * (20 - n_short)
    assert (batch.input_ids[0, n_short:] == tok.pad_token_id).all()
    assert batch.labels.dtype == torch.long and batch.ids == ["b", "a"]
    assert set(batch.model_inputs()) == {"input_ids", "attention_mask", "token_type_ids"}


def test_regression_labels_and_unknown_label():
    assert label_ids([{"label": "2.5"}], None) == [2.5]
    with pytest.raises(ValueError, match=r"dev.csv, row 3 \(ID y\): label 'maybe' is not one of"):
        label_ids([{"ID": "x", "label": "0"}, {"ID": "y", "label": "maybe"}], ["0", "1"], "dev.csv")
