"""Word n-gram: hand-computed probabilities, normalisation, ARPA round trip, bad input."""

import itertools
import math

import pytest

from speechbrain_cald.decoders.ngram import ArpaLM, estimate_ngram, write_arpa

CORPUS = ["the cat sat", "the dog sat", "a cat ran", "the cat ran", "a dog"]


@pytest.fixture
def arpa(tmp_path):
    def make(order, sentences=CORPUS, **kw):
        path = str(tmp_path / f"lm{order}.arpa")
        write_arpa(estimate_ngram(sentences, order=order, **kw), path)
        return ArpaLM(path)
    return make


def test_bigram_matches_hand_count():
    d = 0.75
    lm = estimate_ngram(CORPUS, order=2, discount=d)
    # unigrams: add-one over {the, cat, sat, dog, a, ran, </s>, <unk>}
    counts = {"the": 3, "cat": 3, "sat": 2, "dog": 2, "a": 2, "ran": 2, "</s>": 5, "<unk>": 0}
    total, types = sum(counts.values()), len(counts)
    p_uni = {w: (c + 1) / (total + types) for w, c in counts.items()}
    for w, p in p_uni.items():
        assert 10 ** lm[1][(w,)] == pytest.approx(p, rel=1e-12)
    # P(cat | the): c(the cat) = 2, c(the) = 3 as a context, 2 distinct followers
    expected = (2 - d) / 3 + d * 2 / 3 * p_uni["cat"]
    assert 10 ** lm[2][("the", "cat")] == pytest.approx(expected, rel=1e-12)
    assert 10 ** lm[-1][("the",)] == pytest.approx(d * 2 / 3, rel=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_is_a_distribution(arpa, order):
    lm = arpa(order)
    words = sorted(lm.vocabulary) + ["</s>", "<unk>"]
    contexts = [()] + [c for n in range(1, order) for c in itertools.product(["<s>", "the", "cat", "dog", "zebra"], repeat=n)]
    for context in contexts:
        total = sum(10 ** lm.log10_prob(context, w) for w in words)
        assert total == pytest.approx(1.0, abs=2e-5), context  # ARPA keeps 6 decimals


def test_arpa_round_trip_keeps_every_value(tmp_path):
    model = estimate_ngram(CORPUS, order=3)
    path = str(tmp_path / "lm.arpa")
    write_arpa(model, path)
    lm = ArpaLM(path)
    assert lm.order == 3
    for n in (1, 2, 3):
        for gram, logp in model[n].items():
            assert lm.probs[gram] == pytest.approx(logp, abs=1e-6)
    # an unseen trigram backs off: bow(the cat) * P(dog | cat)
    expected = model[-2][("the", "cat")] + lm.log10_prob(("cat",), "dog")
    assert lm.log10_prob(("the", "cat"), "dog") == pytest.approx(expected, abs=1e-6)


def test_more_context_sharpens(arpa):
    lm2, lm3 = arpa(2), arpa(3)
    # "sat" follows "the cat" once and "a cat" never: the trigram knows, the bigram cannot
    assert lm3.log10_prob(("the", "cat"), "sat") > lm2.log10_prob(("cat",), "sat")
    assert lm3.log10_prob(("a", "cat"), "sat") < lm2.log10_prob(("cat",), "sat")


def test_out_of_vocabulary_word_scores_as_unk(arpa):
    lm = arpa(2)
    assert lm.log10_prob(("the",), "zebra") == lm.log10_prob(("the",), "<unk>")
    assert "zebra" not in lm.vocabulary and "<s>" not in lm.vocabulary


def test_lexicon_words_get_probability_without_counts():
    lm = estimate_ngram(CORPUS, order=1, lexicon=["zebra"])
    assert lm[1][("zebra",)] == lm[1][("<unk>",)] > -math.inf


@pytest.mark.parametrize("kwargs, match", [
    (dict(sentences=[], order=2), "no non-empty sentence"),
    (dict(sentences=["a"], order=0), "order must be >= 1"),
    (dict(sentences=["a"], order=2, discount=1.0), "discount"),
])
def test_bad_estimation_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        estimate_ngram(**kwargs)


def test_bad_arpa_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ArpaLM(str(tmp_path / "missing.arpa"))
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-0.5\n\\end\\\n")
    with pytest.raises(ValueError, match=r"bad.arpa:5"):
        ArpaLM(str(bad))
    empty = tmp_path / "empty.arpa"
    empty.write_text("hello\n")
    with pytest.raises(ValueError, match="not an ARPA file"):
        ArpaLM(str(empty))


def test_command_line_from_a_manifest(tmp_path, capsys):
    from speechbrain_cald.data.manifest import write_manifest
    from speechbrain_cald.decoders.ngram import main

    csv = str(tmp_path / "train.csv")
    write_manifest(csv, [dict(ID=f"u{i}", duration=1.0, wav="x.wav", spk_id="s", wrd=s) for i, s in enumerate(CORPUS)])
    main([str(tmp_path / "lm.arpa"), csv, "--order", "2"])
    assert "word 2-gram from 5 transcripts" in capsys.readouterr().out
    assert ArpaLM(str(tmp_path / "lm.arpa")).vocabulary == {"the", "cat", "sat", "dog", "a", "ran"}
    with pytest.raises(KeyError, match="no column 'text'"):
        main([str(tmp_path / "lm2.arpa"), csv, "--field", "text"])
