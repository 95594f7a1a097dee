"""A prepared text-classification corpus: one CSV manifest per split + ``corpus.json``.

Stage 0 of every text recipe (GLUE, IMDB, mini/Text) writes into one folder
(``<exp>/data/``):

- ``<split>.csv`` per split, named after the corpus's own splits (``train.csv``,
  ``dev.csv``, ``dev_matched.csv``, ``test.csv``), columns ``ID, text_a,
  text_b, label`` (``text_b`` empty for single-sentence tasks; ``label`` the
  class name as the corpus writes it, or the score of a regression task);
- ``corpus.json``: what the task is (``CorpusInfo``): which split trains,
  which one selects the best checkpoint, which are evaluated, the label set
  (``null`` for regression), the metrics, row counts and the preparation's
  options; ``corpus_options.json`` (``data.prepared``) records those options so
  that a second preparation with the same ones is skipped.

Training and evaluation read only this folder, never the corpus itself.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from speechbrain_cald.data.prepared import already_prepared, mark_prepared
from speechbrain_cald.files import atomic_write

__all__ = [
    "CorpusInfo",
    "TEXT_FIELDS",
    "load_corpus_info",
    "prepare_once",
    "read_text_manifest",
    "write_text_manifest",
]

TEXT_FIELDS = ["ID", "text_a", "text_b", "label"]
INFO_FILE = "corpus.json"


@dataclasses.dataclass
class CorpusInfo:
    """What a prepared text corpus holds and how it is judged.

    Attributes
    ----------
    name : str
        e.g. ``"GLUE/sst2"``, ``"IMDB"``.
    splits : dict
        Split name -> CSV file name inside the folder.
    train_split, valid_split : str
        The split trained on and the one that picks the best checkpoint.
    eval_splits : list of str
        Splits stage 4 reports (MNLI: matched and mismatched).
    labels : list of str or None
        Class names in label-id order; None for a regression task (STS-B).
    metrics : list of str
        Names of ``speechbrain_cald.tasks.text_metrics.METRICS``.
    counts : dict
        Rows per split.
    options : dict
        The preparation's options (a preparation with other options redoes it).
    notes : dict
        Anything else worth reporting (licence, label source, dropped rows).
    """

    name: str
    splits: Dict[str, str]
    train_split: str
    valid_split: str
    eval_splits: List[str]
    labels: Optional[List[str]]
    metrics: List[str]
    counts: Dict[str, int] = dataclasses.field(default_factory=dict)
    options: Dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def train_dev_test(cls, name: str, labels: List[str], notes: Dict[str, Any]) -> "CorpusInfo":
        """A classification corpus of ``train`` / ``dev`` / ``test`` judged by accuracy (IMDB, tweets).

        Example
        -------
        >>> info = CorpusInfo.train_dev_test("x", ["neg", "pos"], {})
        >>> info.splits["dev"], info.valid_split, info.eval_splits
        ('dev.csv', 'dev', ['dev', 'test'])
        """
        return cls(
            name=name,
            splits={s: f"{s}.csv" for s in ("train", "dev", "test")},
            train_split="train",
            valid_split="dev",
            eval_splits=["dev", "test"],
            labels=list(labels),
            metrics=["accuracy"],
            notes=dict(notes),
        )

    @property
    def regression(self) -> bool:
        """True when the label is a score (one output), not a class."""
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Outputs of the head: classes, or 1 for regression."""
        return 1 if self.labels is None else len(self.labels)

    def csv(self, folder: str, split: str) -> str:
        """Path of ``split``'s manifest inside ``folder``."""
        if split not in self.splits:
            raise KeyError(f"{self.name}: no split '{split}' (prepared: {sorted(self.splits)})")
        return os.path.join(folder, self.splits[split])

    def save(self, folder: str) -> str:
        """Write ``folder/corpus.json`` (atomically)."""
        path = os.path.join(folder, INFO_FILE)
        with atomic_write(path) as f:
            json.dump(dataclasses.asdict(self), f, indent=2, sort_keys=True)
            f.write("\n")
        return path


def load_corpus_info(folder: str) -> CorpusInfo:
    """Read ``folder/corpus.json`` (written by a text corpus's preparation).

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = CorpusInfo("x", {"train": "train.csv"}, "train", "train", ["train"], ["a", "b"], ["accuracy"]).save(d)
    >>> info = load_corpus_info(d)
    >>> info.num_labels, info.regression
    (2, False)
    """
    path = os.path.join(folder, INFO_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"'{path}' does not exist: prepare the corpus first (stage 0 writes the manifests and {INFO_FILE})"
        )
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    known = {f.name for f in dataclasses.fields(CorpusInfo)}
    return CorpusInfo(**{k: v for k, v in data.items() if k in known})


def write_text_manifest(path: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write a text manifest (``ID, text_a, text_b, label``); returns the row count.

    Example
    -------
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "dev.csv")
    >>> write_text_manifest(p, [dict(ID="a", text_a='say "hi",\\r then $5', label="1")])
    1
    >>> read_text_manifest(p)[0]["text_a"], read_text_manifest(p)[0]["text_b"]
    ('say "hi",\\r then $5', '')
    """
    n = 0
    with atomic_write(path, newline="") as f:
        # every field quoted: a text's carriage return or newline stays inside its field
        writer = csv.DictWriter(f, fieldnames=TEXT_FIELDS, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in TEXT_FIELDS})
            n += 1
    return n


def read_text_manifest(path: str) -> List[Dict[str, str]]:
    """Rows of a text manifest as dicts of str (clear error on a missing column).

    Plain ``csv`` rather than SpeechBrain's ``load_data_csv``: texts may hold
    ``$`` signs, which SpeechBrain's CSV reader would take for variables.
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [k for k in TEXT_FIELDS if k not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a text manifest: missing column(s) {missing} (header {reader.fieldnames})")
        return list(reader)


def prepare_once(
    save_folder: str,
    options: Mapping[str, Any],
    build: Callable[[], "tuple[CorpusInfo, Dict[str, Sequence[Mapping[str, Any]]]]"],
) -> CorpusInfo:
    """Write a corpus's manifests and ``corpus.json`` unless the same preparation exists.

    Arguments
    ---------
    save_folder : str
        Where the manifests go (``<exp>/data``).
    options : mapping
        The preparation's options (JSON-able); the same options recorded
        (``data.prepared``: ``corpus_options.json``) and every manifest present
        mean nothing to do.
    build : callable
        ``() -> (info, {split: rows})``: reads the corpus (only when needed).

    Returns
    -------
    CorpusInfo
        With ``counts`` and ``options`` filled in.
    """
    options = json.loads(json.dumps(dict(options)))  # normalised as stored
    if already_prepared(save_folder, "corpus", options, [os.path.join(save_folder, INFO_FILE)]):
        old = load_corpus_info(save_folder)
        if all(os.path.exists(old.csv(save_folder, s)) for s in old.splits):
            print(f"{old.name}: manifests in {save_folder} match these options, skipping preparation")
            return old
    info, rows = build()
    os.makedirs(save_folder, exist_ok=True)
    for split, split_rows in rows.items():
        info.counts[split] = write_text_manifest(info.csv(save_folder, split), split_rows)
    info.options = options
    info.save(save_folder)
    mark_prepared(save_folder, "corpus", options)
    counts = ", ".join(f"{s} {n:,}" for s, n in info.counts.items())
    print(f"{info.name}: wrote {counts} rows to {save_folder}")
    return info
