"""LM evaluation: perplexity twice (refused on disagreement), zero-shot scoring, task-file errors."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from speechbrain_cald.data.text_corpus import CorpusFormatError
from speechbrain_cald.evaluation.lm_metrics import (
    PerplexityMismatch,
    lambada_accuracy,
    multiple_choice_accuracy,
    perplexity_two_ways,
    read_choice_items,
)


class BigramLM(nn.Module):
    """logits[t] = table[token[t]]: a model whose every probability is known."""

    def __init__(self, table: torch.Tensor, loss_offset: float = 0.0):
        super().__init__()
        self.table = nn.Parameter(table.clone())
        self.loss_offset = loss_offset

    def forward(self, input_ids, labels=None, attention_mask=None, use_cache=False):
        logits = self.table[input_ids]
        loss = None
        if labels is not None:  # transformers' shifted mean, independently written
            loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
            loss = loss + self.loss_offset
        return SimpleNamespace(logits=logits, loss=loss)


class CharTokenizer:
    """One token per character of 'abc ', end-of-text 4."""

    eos_token_id = 4
    alphabet = "abc "

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.alphabet.index(c) for c in text]}


def test_perplexity_is_exact_and_computed_twice():
    table = torch.log_softmax(torch.randn(5, 5), -1)
    blocks = [{"tokens": torch.randint(0, 5, (7,))} for _ in range(5)]
    r = perplexity_two_ways(BigramLM(table), blocks, batch_size=2)
    want = -sum(float(table[b["tokens"][t], b["tokens"][t + 1]]) for b in blocks for t in range(6)) / 30
    assert r["tokens"] == 30 and r["blocks"] == 5
    assert r["nll"] == pytest.approx(want, rel=1e-5) and r["ppl"] == pytest.approx(math.exp(want), rel=1e-5)
    with pytest.raises(PerplexityMismatch, match="refusing to report"):
        perplexity_two_ways(BigramLM(table, loss_offset=0.01), blocks, batch_size=2)


def _lm_preferring(pairs):
    """A bigram table where each (previous, next) character pair in ``pairs`` is likely."""
    table = torch.full((5, 5), -5.0)
    for prev, nxt in pairs:
        table["abc ".index(prev), "abc ".index(nxt)] = 5.0
    return BigramLM(torch.log_softmax(table, -1))


def test_lambada_last_word_greedy_accuracy(tmp_path):
    path = tmp_path / "lambada.jsonl"
    path.write_text('{"text": "ab ab"}\n{"text": "ab ac"}\n')
    lm = _lm_preferring([("a", "b"), ("b", " "), (" ", "a")])  # after "ab " greedy says "ab"
    r = lambada_accuracy(lm, CharTokenizer(), str(path))
    assert r["items"] == 2 and r["acc"] == 50.0
    assert r["ppl"] > 1.0


def test_multiple_choice_by_log_likelihood(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text(
        '{"ctx": "ab", "endings": ["ab", "cc"], "label": 0}\n'
        '{"goal": "ab", "sol1": "cc", "sol2": "ab", "label": 1}\n'
        '{"ctx": "ab", "choices": ["ab", "cc"], "label": "1"}\n'
    )
    lm = _lm_preferring([("a", "b"), ("b", " "), (" ", "a")])
    r = multiple_choice_accuracy(lm, CharTokenizer(), str(path))
    assert r["items"] == 3 and r["acc"] == pytest.approx(200 / 3)


@pytest.mark.parametrize(
    "line",
    ['{"ctx": "a", "endings": ["b"], "label": 0}', '{"ctx": "a", "endings": ["b", "c"], "label": 2}', '{"question": "a"}', "[1]"],
)
def test_bad_choice_lines_name_the_line(tmp_path, line):
    path = tmp_path / "mc.jsonl"
    path.write_text('{"ctx": "a", "endings": ["b", "c"], "label": 1}\n' + line + "\n")
    with pytest.raises(CorpusFormatError, match=f"{path}:2: expected"):
        read_choice_items(str(path))
