"""The recipes' word n-gram from text corpora or transcripts."""

import pytest

from speechbrain_cald.data.manifest import write_manifest
from speechbrain_cald.decoders.kenlm_search import read_arpa_unigrams
from speechbrain_cald.decoders.ngram import ArpaLM, estimate_ngram
from speechbrain_cald.decoders.word_lm import TextTooLargeError, build_word_lm


def test_text_and_transcripts_make_one_lm(tmp_path):
    (tmp_path / "lm-norm.txt").write_text("THE CAT SAT\nA DOG RAN\n")
    write_manifest(str(tmp_path / "train.csv"), [dict(ID="a", duration=1, wav="x", spk_id="s", wrd="THE DOG SAT")])
    out = build_word_lm(str(tmp_path / "lm.arpa"), [str(tmp_path / "lm-norm.txt")], [str(tmp_path / "train.csv")])
    assert read_arpa_unigrams(out) == {"THE", "CAT", "SAT", "A", "DOG", "RAN"}
    ref = estimate_ngram(["THE DOG SAT", "THE CAT SAT", "A DOG RAN"], order=3)
    lm = ArpaLM(out)
    assert lm.log10_prob(("THE",), "DOG") == pytest.approx(ref[2][("THE", "DOG")], abs=1e-6)
    lower = build_word_lm(str(tmp_path / "low.arpa"), [str(tmp_path / "lm-norm.txt")], lower=True)
    assert "cat" in read_arpa_unigrams(lower)


def test_a_text_too_large_for_memory_says_what_to_do(tmp_path):
    (tmp_path / "big.txt").write_text("A B C\n" * 1000)
    with pytest.raises(TextTooLargeError, match="lmplz .*--lm"):
        build_word_lm(str(tmp_path / "lm.arpa"), [str(tmp_path / "big.txt")], max_text_mb=0.001)
