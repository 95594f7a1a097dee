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


# ---------------------------------------------------------------- LengthGroupedSampler
def _lengths(n, seed=0):
    return torch.randint(3, 120, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _loader_batches(sampler, batch_size):
    from torch.utils.data import DataLoader

    return [b.tolist() for b in DataLoader(range(len(sampler)), batch_size=batch_size, sampler=sampler)]


@pytest.mark.parametrize("n", [1000, 1003])  # whole batches only / a short last batch
def test_length_grouped_batches_are_groups_in_a_shuffled_order(n):
    from speechbrain_cald.data.text_dataset import LengthGroupedSampler

    lengths, bs = _lengths(n), 10
    sampler = LengthGroupedSampler(lengths, bs, seed=3)
    batches = _loader_batches(sampler, bs)
    assert sorted(i for b in batches for i in b) == list(range(n))  # each example once
    # the loader's batches are the sampler's groups: each holds similar lengths
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.1 * sum(lengths)
    if n % bs:
        assert len(batches[-1]) == n % bs and all(len(b) == bs for b in batches[:-1])
    # no long-to-short runs: transformers' order falls from the longest batch of each
    # mega-batch to its shortest (~96% of consecutive batches get shorter); shuffled,
    # about half do (99 pairs: 0.5 +- 0.05)
    longest = [max(lengths[i] for i in b) for b in batches[: n // bs]]
    falls = sum(b < a for a, b in zip(longest, longest[1:])) / (len(longest) - 1)
    assert 0.3 < falls < 0.7


def test_length_grouped_order_replays_per_epoch():
    from speechbrain_cald.data.text_dataset import LengthGroupedSampler

    lengths = _lengths(500)
    a, b = LengthGroupedSampler(lengths, 8, seed=1), LengthGroupedSampler(lengths, 8, seed=1)
    first = list(a)
    a.set_epoch(2), b.set_epoch(2)
    assert list(a) == list(b) != first  # a resumed epoch sees the same order; a new epoch another
    assert list(LengthGroupedSampler(lengths, 8, seed=2)) != first


def test_length_grouped_mega_batches():
    from speechbrain_cald.data.text_dataset import LengthGroupedSampler

    lengths = _lengths(800)

    def padded(sampler):
        return sum(8 * max(lengths[i] for i in b) for b in _loader_batches(sampler, 8))

    # smaller mega-batches: less sorted, more padding; one batch per mega-batch: none sorted
    assert padded(LengthGroupedSampler(lengths, 8, mega_batches=50)) < padded(
        LengthGroupedSampler(lengths, 8, mega_batches=4)
    ) < padded(LengthGroupedSampler(lengths, 8, mega_batches=1))
    with pytest.raises(ValueError, match="mega_batches must be >= 1, found 0"):
        LengthGroupedSampler(lengths, 8, mega_batches=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        LengthGroupedSampler(lengths, 0)
