"""KenLM-backed CTC searchers: the LM matches our ARPA reader, all three searchers fix what greedy gets wrong,
for characters and SentencePiece pieces alike."""

import gzip
import shutil

import pytest
import torch

from speechbrain_cald.decoders.kenlm_search import LM_DECODERS, KenLMWordLM, kenlm_ctc_searcher, read_arpa_unigrams
from speechbrain_cald.decoders.ngram import ArpaLM, estimate_ngram, write_arpa

pytest.importorskip("kenlm")
pytest.importorskip("pyctcdecode")

SENTENCES = ["the cat sat on the mat", "a dog sat on the rug", "the dog ran to the cat", "a cat ran on the mat"]
CHARS = ["<blank>", " "] + list("abcdefghijklmnopqrstuvwxyz")


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("lm") / "lm.arpa")
    write_arpa(estimate_ngram(SENTENCES, order=3), path)
    return path


def test_kenlm_scores_equal_our_arpa_reader(lm_path):
    ours, kenlm = ArpaLM(lm_path), KenLMWordLM(lm_path)
    assert kenlm.order == 3 and kenlm.vocabulary == ours.vocabulary
    words = sorted(ours.vocabulary) + ["zebra"]  # an unknown word backs off to <unk>
    for context in [("<s>",), ("<s>", "the"), ("the", "cat"), ("cat", "sat"), ("dog",), ("zebra", "the")]:
        for w in words + ["</s>"]:
            assert kenlm.log10_prob(context, w) == pytest.approx(ours.log10_prob(context, w), abs=1e-5)


def _posteriors(units, labels, confuse=None):
    """Peaky CTC log-probs spelling ``units`` (each one frame + a blank); ``confuse`` = {position: (wrong, p)}."""
    T = 2 * len(units) + 1
    p = torch.full((1, T, len(labels)), 1e-4)
    p[0, :, 0] = 1.0
    for i, u in enumerate(units):
        row = p[0, 2 * i + 1]
        row[:] = 1e-4
        row[labels.index(u)] = 1.0
        if confuse and i in confuse:
            wrong, weight = confuse[i]
            row[labels.index(wrong)] = weight
    return torch.log(p / p.sum(-1, keepdim=True))


@pytest.mark.parametrize("kind", LM_DECODERS)
def test_every_searcher_fixes_an_error_the_lm_can_fix(lm_path, kind):
    text = "the cat sat on the mat"
    lp = _posteriors(list(text), CHARS, confuse={4: ("k", 1.3)})  # greedy reads "the kat ..."
    greedy = "".join(CHARS[i] for i in lp[0].argmax(-1).tolist() if i)
    assert "kat" in greedy
    searcher = kenlm_ctc_searcher(kind, CHARS, lm_path, alpha=0.5, beta=1.0, beam_size=16)
    assert searcher(lp, torch.ones(1)) == [text]
    # relative lengths cut the batch's padding off
    padded = torch.cat([lp, torch.zeros(1, 10, len(CHARS)).log_softmax(-1)], dim=1)
    assert searcher(padded, torch.tensor([lp.shape[1] / padded.shape[1]])) == [text]


def test_piece_tokens_decode_with_pyctcdecode_and_speechbrain(lm_path):
    pieces = ["<unk>", "\u2581the", "\u2581cat", "\u2581c", "at", "\u2581s", "\u2581on", "\u2581mat", "\u2581k"]
    units = ["\u2581the", "\u2581c", "at", "\u2581s", "at", "\u2581on", "\u2581the", "\u2581mat"]
    lp = _posteriors(units, pieces, confuse={1: ("\u2581k", 1.3)})  # greedy: "the kat sat ..."
    for kind in ("pyctcdecode", "speechbrain"):
        searcher = kenlm_ctc_searcher(kind, pieces, lm_path, alpha=0.5, beta=1.0, beam_size=16)
        assert searcher(lp, None) == ["the cat sat on the mat"], kind
    with pytest.raises(ValueError, match="for SentencePiece tokens use 'pyctcdecode' or 'speechbrain'"):
        kenlm_ctc_searcher("cald", pieces, lm_path)


def test_lexicon_from_gzipped_arpa_and_binary_needs_a_word_list(lm_path, tmp_path):
    gz = str(tmp_path / "lm.arpa.gz")
    with open(lm_path, "rb") as fin, gzip.open(gz, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    assert read_arpa_unigrams(gz) == ArpaLM(lm_path).vocabulary
    fake_binary = str(tmp_path / "lm.bin")
    shutil.copyfile(lm_path, fake_binary)  # KenLM reads ARPA whatever the name; the lexicon needs a list
    with pytest.raises(ValueError, match="pass the lexicon as a word list"):
        KenLMWordLM(fake_binary)
    words = tmp_path / "vocab.txt"
    words.write_text("\n".join(sorted(ArpaLM(lm_path).vocabulary)) + "\n")
    assert KenLMWordLM(fake_binary, str(words)).vocabulary == ArpaLM(lm_path).vocabulary
