"""Label sets of utterance-classification corpora (intents, speakers).

The label set comes from the **training split**: one class per distinct label,
in sorted order (so the same corpus always gives the same class ids). A
label of another split that the training split never shows cannot be
predicted; ``check_known_labels`` makes it an error naming the record.

The label encoder is SpeechBrain's ``CategoricalEncoder`` saved in its own text
format (``'alarm_set' => 0``), which SpeechBrain's ``EncoderClassifier`` reads
at inference time.

Command line (stage 1 of the classification recipes)::

    python -m speechbrain_cald.data.labels results/data/label_encoder.txt \\
        results/data/train.csv [more training manifests] --column label
"""

from __future__ import annotations

import argparse
import os
from typing import Iterable, List, Optional, Sequence, Tuple

from speechbrain.dataio.encoder import CategoricalEncoder

from speechbrain_cald.data.manifest import read_manifest
from speechbrain_cald.files import atomic_target

__all__ = [
    "UnseenLabelError",
    "build_label_encoder",
    "check_known_labels",
    "load_label_encoder",
    "manifest_labels",
    "write_label_encoder",
]


class UnseenLabelError(ValueError):
    """A record's label does not occur in the training split."""


def build_label_encoder(labels: Iterable[str]) -> CategoricalEncoder:
    """A ``CategoricalEncoder`` with one class per distinct label, ids in sorted label order.

    Example
    -------
    >>> enc = build_label_encoder(["weather_query", "alarm_set", "weather_query"])
    >>> enc.lab2ind
    {'alarm_set': 0, 'weather_query': 1}
    """
    labels = sorted(set(labels))
    if not labels:
        raise ValueError("label encoder: no label at all (is the training manifest empty?)")
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(labels)
    encoder.expect_len(len(labels))
    return encoder


def manifest_labels(paths: Sequence[str], column: str = "label") -> List[str]:
    """Every row's ``column`` of the manifests ``paths`` (clear error for a missing file or column).

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_cald.data.manifest import write_manifest
    >>> p = os.path.join(tempfile.mkdtemp(), "train.csv")
    >>> _ = write_manifest(p, [dict(ID="a", label="x"), dict(ID="b", label="y")], fields=["ID", "label"])
    >>> manifest_labels([p])
    ['x', 'y']
    """
    labels = []
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"label encoder: manifest '{path}' does not exist (run the preparation, stage 0)")
        rows = read_manifest(path)
        if rows and column not in rows[0]:
            raise KeyError(f"label encoder: manifest '{path}' has no column '{column}' (columns: {sorted(rows[0])})")
        labels += [row[column] for row in rows]
    return labels


def write_label_encoder(path: str, train_manifests: Sequence[str], column: str = "label") -> CategoricalEncoder:
    """Build the label encoder from the training manifests and save it to ``path`` (atomically).

    Returns
    -------
    CategoricalEncoder
    """
    encoder = build_label_encoder(manifest_labels(train_manifests, column))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_target(path) as tmp:
        encoder.save(tmp)
    return encoder


def load_label_encoder(path: str, expect: Optional[int] = None) -> CategoricalEncoder:
    """Load a label encoder written by :func:`write_label_encoder`.

    Arguments
    ---------
    path : str
        The file.
    expect : int, optional
        The number of classes the caller's model has; a different count is an error.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_cald.data.manifest import write_manifest
    >>> d = tempfile.mkdtemp()
    >>> _ = write_manifest(os.path.join(d, "t.csv"), [dict(ID="a", label="x"), dict(ID="b", label="y")],
    ...                    fields=["ID", "label"])
    >>> _ = write_label_encoder(os.path.join(d, "enc.txt"), [os.path.join(d, "t.csv")])
    >>> load_label_encoder(os.path.join(d, "enc.txt")).decode_ndim([1, 0])
    ['y', 'x']
    >>> load_label_encoder(os.path.join(d, "enc.txt"), expect=3)
    Traceback (most recent call last):
    ...
    ValueError: label encoder '...enc.txt' has 2 classes, the model 3 (was the model trained on another label set?)
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"label encoder '{path}' does not exist (stage 1 writes it from the training manifest)")
    encoder = CategoricalEncoder()
    encoder.load(path)
    if expect is not None and len(encoder) != expect:
        raise ValueError(
            f"label encoder '{path}' has {len(encoder)} classes, the model {expect} "
            "(was the model trained on another label set?)"
        )
    encoder.expect_len(len(encoder))
    return encoder


def check_known_labels(
    records: Iterable[Tuple[str, str]], known: Iterable[str], split: str, train_what: str = "the training split"
) -> None:
    """Raise ``UnseenLabelError`` for the first record whose label is not in ``known``.

    Arguments
    ---------
    records : iterable of (label, where)
        Each record's label and a description of where it comes from
        (``"dataset/slurp/devel.jsonl line 17 (slurp_id 13804)"``).
    known : iterable of str
        The training split's labels.
    split : str
        The split being checked, for the message.
    train_what : str
        What the training split is, for the message.

    Example
    -------
    >>> check_known_labels([("a", "x.txt line 1")], {"a"}, "test")
    >>> check_known_labels([("a", "x.txt line 1"), ("b", "x.txt line 2"), ("b", "x.txt line 5")], {"a"}, "test")
    Traceback (most recent call last):
    ...
    speechbrain_cald.data.labels.UnseenLabelError: test: label 'b' of x.txt line 2 does not occur in the training split, so no model trained on it can predict it (2 records of test have labels outside the training split's 1: ['b'])
    """
    known = set(known)
    unseen = [(label, where) for label, where in records if label not in known]
    if unseen:
        label, where = unseen[0]
        labels = sorted({lab for lab, _ in unseen})
        raise UnseenLabelError(
            f"{split}: label '{label}' of {where} does not occur in {train_what}, so no model trained on it "
            f"can predict it ({len(unseen)} records of {split} have labels outside the training split's "
            f"{len(known)}: {labels[:10]}{' ...' if len(labels) > 10 else ''})"
        )


def main(argv=None) -> None:
    """``python -m speechbrain_cald.data.labels OUT TRAIN.csv [...] [--column label]``."""
    p = argparse.ArgumentParser(description="Write the label encoder of the training manifests.")
    p.add_argument("out", help="the label encoder file to write")
    p.add_argument("train_manifests", nargs="+", help="training manifests (CSV)")
    p.add_argument("--column", default="label", help="the label column")
    args = p.parse_args(argv)
    encoder = write_label_encoder(args.out, args.train_manifests, args.column)
    print(f"{len(encoder)} classes from {', '.join(args.train_manifests)} -> {args.out}")


if __name__ == "__main__":
    main()
