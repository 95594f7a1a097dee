"""Lexicon + n-gram CTC beam search: against an exhaustive search, the scorer, bad input."""

import itertools
import math

import pytest
import torch

from speechbrain_cald.decoders.ctc_lm import LexiconCTCDecoder, NGramScorer, lexicon_ctc_searcher
from speechbrain_cald.decoders.ngram import ArpaLM, estimate_ngram, write_arpa

LABELS = ["<blank>", " ", "a", "b"]
SENTENCES = ["ab ba", "ba ab", "ab", "ba ba ab"]


@pytest.fixture
def lm_path(tmp_path):
    path = str(tmp_path / "lm.arpa")
    write_arpa(estimate_ngram(SENTENCES, order=2), path)
    return path


def collapse(path):
    out, prev = [], None
    for i in path:
        if i != prev and i != 0:
            out.append(LABELS[i])
        prev = i
    return "".join(out)


def exhaustive_best(log_probs, scorer):
    """argmax over texts of log P_ctc(text) + fused LM score, by enumerating every frame path."""
    T, C = log_probs.shape
    text_logp = {}
    for path in itertools.product(range(C), repeat=T):
        text = collapse(path)
        if text.startswith(" ") or "  " in text:
            continue  # the decoder hypothesises no leading or double spaces
        text = text.rstrip(" ")  # and merges a trailing space into the same text
        lp = sum(log_probs[t, c].item() for t, c in enumerate(path))
        text_logp[text] = torch.logaddexp(torch.tensor(text_logp.get(text, -math.inf)), torch.tensor(lp)).item()

    def fused(text):
        state, words = scorer.get_start_state(), text.split()
        if not words:
            return scorer.score(state, "", is_last_word=True)[0]
        score = 0.0
        for i, w in enumerate(words):
            s, state = scorer.score(state, w, is_last_word=i == len(words) - 1)
            score += s
        return score

    return max(text_logp, key=lambda t: text_logp[t] + fused(t))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("sharpness", [1.0, 3.0])
def test_unbounded_search_finds_the_exhaustive_optimum(lm_path, seed, sharpness):
    g = torch.Generator().manual_seed(seed)
    # random CTC outputs over 6 frames (4^6 = 4,096 paths)
    log_probs = torch.log_softmax(sharpness * torch.randn(6, 4, generator=g), dim=-1)
    decoder = lexicon_ctc_searcher(LABELS, lm_path, alpha=0.5, beta=1.0, beam_size=10**6,
                                   beam_prune_logp=-1e9, token_prune_min_logp=-1e9)
    assert decoder(log_probs[None])[0] == exhaustive_best(log_probs, decoder.scorer)


def test_default_pruning_agrees_with_exhaustive_search_on_peaky_outputs(lm_path):
    agree = 0
    for seed in range(20):
        g = torch.Generator().manual_seed(100 + seed)
        log_probs = torch.log_softmax(4.0 * torch.randn(6, 4, generator=g), dim=-1)
        decoder = lexicon_ctc_searcher(LABELS, lm_path, alpha=0.5, beta=1.0)
        agree += decoder(log_probs[None])[0] == exhaustive_best(log_probs, decoder.scorer)
    assert agree == 20


def test_scorer_is_the_fused_log_probability(lm_path):
    lm = ArpaLM(lm_path)
    scorer = NGramScorer(lm, alpha=0.7, beta=0.3, unk_score_offset=-10.0)
    state = scorer.get_start_state()
    score, state2 = scorer.score(state, "ab")
    assert score == pytest.approx(0.7 * math.log(10) * lm.log10_prob(("<s>",), "ab") + 0.3)
    assert state2 == ("ab",)
    last, _ = scorer.score(state2, "ba", is_last_word=True)
    both = lm.log10_prob(("ab",), "ba") + lm.log10_prob(("ba",), "</s>")
    assert last == pytest.approx(0.7 * math.log(10) * both + 0.3)
    oov, _ = scorer.score(state, "bb")
    assert oov == pytest.approx(0.7 * math.log(10) * lm.log10_prob(("<s>",), "<unk>") + 0.3 - 10.0)
    assert scorer.score_partial_token("b") == 0.0 and scorer.score_partial_token("bb") == -10.0
    assert scorer.order == 2


def test_lexicon_repairs_a_misspelt_word(lm_path):
    # frames read "ab bb" greedily; the second word's last letter is nearly a tie
    p = torch.full((1, 7, 4), 0.02)
    for t, c in enumerate([2, 0, 3, 1, 3, 0, 3]):
        p[0, t, c] = 0.94
    p[0, 6, 3], p[0, 6, 2] = 0.5, 0.46
    greedy = collapse(p[0].argmax(-1).tolist())
    assert greedy == "ab bb"
    decoder = lexicon_ctc_searcher(LABELS, lm_path)
    assert decoder(p.log(), torch.ones(1)) == ["ab ba"]
    # without the lexicon penalty and the LM the search keeps the acoustics' choice
    plain = lexicon_ctc_searcher(LABELS, lm_path, alpha=0.0, beta=0.0, unk_score_offset=0.0)
    assert plain(p.log(), torch.ones(1)) == ["ab bb"]


def test_repeated_letters_need_a_blank_between(tmp_path):
    path = str(tmp_path / "lm.arpa")
    write_arpa(estimate_ngram(["aab", "ab"], order=1), path)
    decoder = lexicon_ctc_searcher(LABELS, path, alpha=0.0, beta=0.0, unk_score_offset=0.0)
    one_hot = lambda seq: torch.log(torch.nn.functional.one_hot(torch.tensor(seq), 4).float() * 0.97 + 0.01)[None]
    assert decoder(one_hot([2, 2, 3])) == ["ab"]      # a a b -> "ab"
    assert decoder(one_hot([2, 0, 2, 3])) == ["aab"]  # a - a b -> "aab"


def test_relative_lengths_ignore_padding(lm_path):
    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(3.0 * torch.randn(1, 8, 4, generator=g), dim=-1)
    padded = torch.cat([lp, torch.log_softmax(torch.randn(1, 4, 4, generator=g), -1)], dim=1)
    decoder = lexicon_ctc_searcher(LABELS, lm_path)
    alone = decoder(lp, torch.ones(1))
    assert decoder(padded, torch.tensor([8 / 12])) == alone
    # a batch decodes each row as it decodes alone
    batch = torch.cat([padded, torch.cat([lp, lp[:, :4]], dim=1)])
    assert decoder(batch, torch.tensor([8 / 12, 1.0])) == alone + decoder(batch[1:], torch.ones(1))


def test_bad_input(lm_path, tmp_path):
    with pytest.raises(ValueError, match="word separator ' ' is not a CTC label"):
        lexicon_ctc_searcher(["<blank>", "a", "b"], lm_path)
    decoder = lexicon_ctc_searcher(LABELS, lm_path)
    with pytest.raises(ValueError, match=r"must be \(B, T, 4\), got \(7, 4\)"):
        decoder(torch.zeros(7, 4))
    with pytest.raises(ValueError, match="beam_size"):
        LexiconCTCDecoder(LABELS, decoder.scorer, beam_size=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lexicon_ctc_searcher(LABELS, str(tmp_path / "nope.arpa"))
