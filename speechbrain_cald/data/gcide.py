"""English text available offline: the GNU Collaborative International Dictionary of English.

Debian's ``dict-gcide`` package installs GCIDE in dictd format
(``/usr/share/dictd/gcide.dict.dz``, gzip): about 200,000 entries of Webster's
Revised Unabridged Dictionary (1913) with WordNet additions, i.e. tens of MB of
real English prose (definitions and quotations). GCIDE is free software under
the GNU General Public License, version 2 or later
(``/usr/share/doc/dict-gcide/copyright``); the text derived here for training
keeps that licence.

:func:`gcide_documents` yields one document per entry, as plain text: the
headword, its part of speech and the definitions, with the dictionary markup
removed (pronunciations ``\\Ab*do"men\\``, bracketed etymologies and source
tags such as ``[1913 Webster]``, cross-reference braces, syllable marks).
:func:`write_gcide_corpus` writes them in the Pile's JSON-lines layout
(``train/gcide.jsonl``, ``val.jsonl``, ``test.jsonl``), so the LM recipes read
this corpus exactly as they read the Pile.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from typing import Dict, Iterator, List
from speechbrain_cald.files import atomic_write

__all__ = ["GCIDE_DICT", "GcideMissingError", "clean_entry", "gcide_documents", "write_gcide_corpus"]

GCIDE_DICT = "/usr/share/dictd/gcide.dict.dz"

_PRONUNCIATION = re.compile(r"\\[^\\\n]*\\")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_CITATION = re.compile(r"\s--\s?[A-Z][\w.&' ]{0,40}?\.(?=\s|$)")
_MARKS = str.maketrans({"{": "", "}": "", "*": "", "`": "", '"': "", "?": ""})
_SPACE = re.compile(r"\s+")
_LOOSE_PUNCT = re.compile(r"\s+([,.;:])")


class GcideMissingError(FileNotFoundError):
    """GCIDE is not installed (Debian package dict-gcide)."""


def clean_entry(lines: List[str]) -> str:
    """One dictd entry (its lines) as plain text.

    Example
    -------
    >>> clean_entry(['Abditory \\\\Ab"di*to*ry\\\\, n. [L. abditorium.]',
    ...              '   A place for hiding or preserving articles of value. --Cowell.',
    ...              '   [1913 Webster]'])
    'Abditory, n. A place for hiding or preserving articles of value.'
    """
    text = " ".join(line.strip() for line in lines)
    text = _PRONUNCIATION.sub("", text)
    for _ in range(2):  # one level of nesting: [See {x} [R.]]
        text = _BRACKETS.sub("", text)
    text = _CITATION.sub("", text)
    text = text.translate(_MARKS)
    text = _LOOSE_PUNCT.sub(r"\1", _SPACE.sub(" ", text)).strip()
    return text


def gcide_documents(path: str = GCIDE_DICT, min_words: int = 4) -> Iterator[str]:
    """Every GCIDE entry as a plain-text document (entries of fewer than ``min_words`` words skipped)."""
    if not os.path.isfile(path):
        raise GcideMissingError(
            f"GCIDE dictionary {path} not found: install Debian's dict-gcide "
            "(sudo apt-get install dict-gcide; ./run.sh does it when run as root)"
        )
    entry: List[str] = []
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line and not line[0].isspace():  # a headword line starts the next entry
                if entry:
                    text = clean_entry(entry)
                    if not entry[0].startswith("00-database") and len(text.split()) >= min_words:
                        yield text
                entry = [line]
            elif entry and line.strip():
                entry.append(line)
    if entry:
        text = clean_entry(entry)
        if len(text.split()) >= min_words:
            yield text


def write_gcide_corpus(
    out_folder: str, holdout_every: int = 50, max_train: int = 0, path: str = GCIDE_DICT
) -> Dict[str, int]:
    """GCIDE in the Pile's layout: ``train/gcide.jsonl``, ``val.jsonl``, ``test.jsonl``.

    Entry ``i`` (in dictionary order) goes to test when ``i % holdout_every == 1``,
    to val when ``i % holdout_every == 2``, else to train (so the held-out
    entries spread over the alphabet). The same arguments always write the same
    bytes.

    Arguments
    ---------
    out_folder : str
        The corpus root to write.
    holdout_every : int
        One entry in this many goes to test, one to val.
    max_train : int
        Keep at most this many training entries, evenly spread (0: all).
    path : str
        The GCIDE ``.dict.dz`` file.

    Returns
    -------
    dict
        Documents per split.
    """
    docs = list(gcide_documents(path))
    splits: Dict[str, List[str]] = {"train": [], "val": [], "test": []}
    for i, doc in enumerate(docs):
        r = i % holdout_every
        splits["test" if r == 1 else "val" if r == 2 else "train"].append(doc)
    if max_train and len(splits["train"]) > max_train:
        step = len(splits["train"]) / max_train
        splits["train"] = [splits["train"][int(k * step)] for k in range(max_train)]
    files = {"train": os.path.join(out_folder, "train", "gcide.jsonl"),
             "val": os.path.join(out_folder, "val.jsonl"), "test": os.path.join(out_folder, "test.jsonl")}
    for split, file in files.items():
        os.makedirs(os.path.dirname(file), exist_ok=True)
        with atomic_write(file) as f:
            for doc in splits[split]:
                f.write(json.dumps({"text": doc, "meta": {"source": "GCIDE 0.48 (GPL-2+)"}}) + "\n")
    return {split: len(d) for split, d in splits.items()}
