"""IMDB movie reviews (Maas et al., 2011) as distributed: ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``.

``--data_folder`` is the folder holding ``aclImdb/`` (the extracted
``aclImdb_v1.tar.gz``); the ``aclImdb`` folder itself is accepted too. Each
review is one file named ``<id>_<rating>.txt``: ratings 7-10 under ``pos/``,
1-4 under ``neg/``; a name of another form or a rating on the wrong side is
an error naming the file. ``unsup/`` (unlabelled) is not used.

Text: the ``<br />`` line breaks of the HTML source become spaces and runs of
white space one space; nothing else changes.

Splits: ``test.csv`` (the official 25,000 test reviews), and ``train.csv`` /
``dev.csv`` from the official 25,000 training reviews: a seeded rule holds out
``dev_per_class`` reviews of each class (files sorted by name, shuffled by
``random.Random(seed)``, the first ones taken), so the split is the same on
every machine.

"""

from __future__ import annotations

import os
import random
import re
from typing import Dict, List

from speechbrain_cald.data.text_classification_corpus import CorpusInfo, prepare_once
from speechbrain_cald.data.utf8 import read_utf8

__all__ = ["IMDB_LABELS", "clean_review", "imdb_root", "prepare_imdb", "read_imdb_split"]

IMDB_LABELS = ["neg", "pos"]
_RATINGS = {"neg": range(1, 5), "pos": range(7, 11)}
_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def clean_review(text: str) -> str:
    """``<br />`` markup and runs of white space -> one space.

    Example
    -------
    >>> clean_review("Great film.<br /><br />Loved it.\\n ")
    'Great film. Loved it.'
    """
    return _SPACE.sub(" ", _BREAK.sub(" ", text)).strip()


def imdb_root(data_folder: str) -> str:
    """The ``aclImdb`` folder: ``<data_folder>/aclImdb`` or ``data_folder`` itself."""
    for candidate in (os.path.join(data_folder, "aclImdb"), data_folder):
        if os.path.isdir(os.path.join(candidate, "train", "pos")):
            return candidate
    raise FileNotFoundError(
        f"IMDB: no '{os.path.join(data_folder, 'aclImdb', 'train', 'pos')}': --data_folder should hold the "
        "extracted aclImdb_v1.tar.gz (aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt)"
    )


def read_imdb_split(data_folder: str, split: str) -> List[Dict[str, str]]:
    """Rows ``{ID, text_a, text_b, label}`` of ``aclImdb/<split>/{neg,pos}``, sorted by file name.

    IDs are ``<split>-<label>-<id>_<rating>``.
    """
    root = imdb_root(data_folder)
    rows: List[Dict[str, str]] = []
    for label in IMDB_LABELS:
        folder = os.path.join(root, split, label)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"IMDB: '{folder}' does not exist (expected aclImdb/{split}/{{pos,neg}}/)")
        names = sorted(os.listdir(folder))
        for name in names:
            match = _NAME.match(name)
            path = os.path.join(folder, name)
            if match is None:
                raise ValueError(f"IMDB: '{path}' is not named <id>_<rating>.txt")
            rating = int(match.group(2))
            if rating not in _RATINGS[label]:
                raise ValueError(
                    f"IMDB: '{path}' has rating {rating}, but {label}/ holds ratings "
                    f"{_RATINGS[label].start}-{_RATINGS[label].stop - 1}"
                )
            text = clean_review(read_utf8(path))
            if not text:
                raise ValueError(f"IMDB: '{path}' is empty")
            rows.append(dict(ID=f"{split}-{label}-{name[:-4]}", text_a=text, text_b="", label=label))
        if not names:
            raise ValueError(f"IMDB: '{folder}' holds no reviews")
    return rows


def hold_out(rows: List[Dict[str, str]], per_class: int, seed: int):
    """``(train, dev)``: ``per_class`` rows of each label, seeded, for dev."""
    dev_ids = set()
    for label in IMDB_LABELS:
        ids = sorted(r["ID"] for r in rows if r["label"] == label)
        if per_class >= len(ids):
            raise ValueError(f"IMDB: cannot hold out {per_class} '{label}' reviews for dev out of {len(ids)}")
        random.Random(f"{seed}-{label}").shuffle(ids)
        dev_ids.update(ids[:per_class])
    return [r for r in rows if r["ID"] not in dev_ids], [r for r in rows if r["ID"] in dev_ids]


def prepare_imdb(data_folder: str, save_folder: str, dev_per_class: int = 1250, seed: int = 1234) -> CorpusInfo:
    """Stage 0: ``train.csv``, ``dev.csv`` (held out from train) and ``test.csv`` + ``corpus.json``.

    Arguments
    ---------
    data_folder : str
        Holds ``aclImdb/``.
    save_folder : str
        Where the manifests go.
    dev_per_class : int
        Training reviews of each class held out for dev (1,250: 10% of train).
    seed : int
        Seed of the hold-out rule.
    """
    options = dict(corpus="IMDB", data_folder=os.path.abspath(data_folder), dev_per_class=dev_per_class, seed=seed)

    def build():
        train, dev = hold_out(read_imdb_split(data_folder, "train"), dev_per_class, seed)
        notes = {"source": imdb_root(os.path.abspath(data_folder)),
                 "dev": f"{dev_per_class} per class held out of train, seed {seed}"}
        info = CorpusInfo.train_dev_test("IMDB", IMDB_LABELS, notes)
        return info, {"train": train, "dev": dev, "test": read_imdb_split(data_folder, "test")}

    return prepare_once(save_folder, options, build)
