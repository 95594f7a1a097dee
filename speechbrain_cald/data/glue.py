"""GLUE as its download script distributes it: ``<data_folder>/<TASK>/{train,dev}.tsv``.

``GLUE_TASKS`` is the registry: one ``GlueTask`` per task saying where its
files are, which tab-separated columns hold the text(s) and the label, what
the header says there (CoLA has none), the label set and the official
metrics. The column indices are those of the GLUE processors of transformers'
``data/processors/glue.py`` (and jiant); the header names are checked too, so
a file of another layout fails with the expected and found names.

| task | folder | text column(s) | label column | labels | metrics |
|---|---|---|---|---|---|
| cola | CoLA (no header) | 3 | 1 | 0, 1 | Matthews correlation |
| sst2 | SST-2 | 0 ``sentence`` | 1 ``label`` | 0, 1 | accuracy |
| mrpc | MRPC | 3 ``#1 String``, 4 ``#2 String`` | 0 ``Quality`` | 0, 1 | F1, accuracy |
| qqp | QQP | 3 ``question1``, 4 ``question2`` | 5 ``is_duplicate`` | 0, 1 | F1, accuracy |
| stsb | STS-B | 7 ``sentence1``, 8 ``sentence2`` | last ``score`` | 0-5 (regression) | Pearson, Spearman |
| mnli | MNLI | 8 ``sentence1``, 9 ``sentence2`` | last ``gold_label`` | contradiction, entailment, neutral | accuracy (dev_matched, dev_mismatched) |
| qnli | QNLI | 1 ``question``, 2 ``sentence`` | last ``label`` | entailment, not_entailment | accuracy |
| rte | RTE | 1 ``sentence1``, 2 ``sentence2`` | last ``label`` | entailment, not_entailment | accuracy |
| wnli | WNLI | 1 ``sentence1``, 2 ``sentence2`` | last ``label`` | 0, 1 | accuracy |

Lines are split on tabs only (no quoting: GLUE texts contain bare quotes, as
the transformers processors read them with ``quotechar=None``). Every line
must have as many columns as the header (CoLA: 4); a line with another count,
an unknown label, a score that is not a number or bytes that are not UTF-8
are errors naming the file and the line. Examples with an empty text are
kept (GLUE's scores count them) and counted: a warning names their lines, and
``corpus.json``'s notes hold the count per split. The unlabelled ``test*.tsv``
files are not used.

"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Dict, List, Optional, Tuple

from speechbrain_cald.data.text_classification_corpus import CorpusInfo, prepare_once
from speechbrain_cald.data.utf8 import utf8_lines

__all__ = [
    "GLUE_TASKS",
    "GlueFormatError",
    "GlueTask",
    "empty_text_rows",
    "glue_task",
    "num_labels",
    "prepare_glue",
    "read_glue_split",
]

logger = logging.getLogger(__name__)


class GlueFormatError(ValueError):
    """A GLUE file whose layout or content is not the distributed one (file and line in the message)."""


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """Where one GLUE task's data is and how it is read and judged.

    Attributes
    ----------
    name : str
        The ``--task`` value (``sst2``).
    folder : str
        The task's folder under the GLUE root (``SST-2``).
    text_columns : tuple of int
        Column(s) of the sentence(s): one for single-sentence tasks, two for pairs.
    label_column : int
        Column of the label (negative: from the end, as MNLI's ``gold_label``).
    header : dict or None
        Column -> the header's name there (checked); None: no header line (CoLA).
    n_columns : int or None
        Columns per line without a header (with one, the header's count rules).
    labels : tuple of str or None
        Class names as the files write them, in label-id order; None: a score.
    score_range : (float, float)
        Valid scores of a regression task.
    metrics : tuple of str
        The task's official metrics (``text_metrics.METRICS`` names).
    dev_splits : tuple of str
        The labelled evaluation files (``dev``; MNLI's matched and mismatched).
    """

    name: str
    folder: str
    text_columns: Tuple[int, ...]
    label_column: int
    header: Optional[Dict[int, str]]
    labels: Optional[Tuple[str, ...]]
    metrics: Tuple[str, ...]
    n_columns: Optional[int] = None
    score_range: Tuple[float, float] = (0.0, 5.0)
    dev_splits: Tuple[str, ...] = ("dev",)

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


_BINARY = ("0", "1")
_ENTAIL = ("entailment", "not_entailment")

GLUE_TASKS: Dict[str, GlueTask] = {
    t.name: t
    for t in [
        GlueTask("cola", "CoLA", (3,), 1, None, _BINARY, ("mcc",), n_columns=4),
        GlueTask("sst2", "SST-2", (0,), 1, {0: "sentence", 1: "label"}, _BINARY, ("accuracy",)),
        GlueTask(
            "mrpc", "MRPC", (3, 4), 0, {0: "Quality", 3: "#1 String", 4: "#2 String"}, _BINARY, ("f1", "accuracy")
        ),
        GlueTask(
            "qqp", "QQP", (3, 4), 5, {3: "question1", 4: "question2", 5: "is_duplicate"}, _BINARY, ("f1", "accuracy")
        ),
        GlueTask(
            "stsb", "STS-B", (7, 8), -1, {7: "sentence1", 8: "sentence2", -1: "score"}, None, ("pearson", "spearman")
        ),
        GlueTask(
            "mnli",
            "MNLI",
            (8, 9),
            -1,
            {8: "sentence1", 9: "sentence2", -1: "gold_label"},
            ("contradiction", "entailment", "neutral"),
            ("accuracy",),
            dev_splits=("dev_matched", "dev_mismatched"),
        ),
        GlueTask("qnli", "QNLI", (1, 2), -1, {1: "question", 2: "sentence", -1: "label"}, _ENTAIL, ("accuracy",)),
        GlueTask("rte", "RTE", (1, 2), -1, {1: "sentence1", 2: "sentence2", -1: "label"}, _ENTAIL, ("accuracy",)),
        GlueTask("wnli", "WNLI", (1, 2), -1, {1: "sentence1", 2: "sentence2", -1: "label"}, _BINARY, ("accuracy",)),
    ]
}


def glue_task(name: str) -> GlueTask:
    """The registry entry of ``name`` (``sst2``, ``SST-2`` and ``SST2`` all work).

    Example
    -------
    >>> glue_task("SST-2").folder, glue_task("mnli").dev_splits
    ('SST-2', ('dev_matched', 'dev_mismatched'))
    >>> glue_task("squad")
    Traceback (most recent call last):
    ...
    KeyError: "GLUE task 'squad' is unknown: expected one of cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli"
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key in GLUE_TASKS:
        return GLUE_TASKS[key]
    raise KeyError(f"GLUE task '{name}' is unknown: expected one of {', '.join(GLUE_TASKS)}")


def num_labels(task: str) -> int:
    """Outputs of the task's head: classes, or 1 for STS-B's score (for YAML ``!apply``).

    Example
    -------
    >>> num_labels("mnli"), num_labels("stsb")
    (3, 1)
    """
    return glue_task(task).num_labels


def _label(task: GlueTask, value: str, where: str) -> str:
    if task.labels is not None:
        if value not in task.labels:
            raise GlueFormatError(f"{where}: label '{value}' is not one of {list(task.labels)} ({task.name})")
        return value
    try:
        score = float(value)
    except ValueError:
        raise GlueFormatError(f"{where}: score '{value}' is not a number ({task.name})") from None
    low, high = task.score_range
    if not (math.isfinite(score) and low <= score <= high):
        raise GlueFormatError(f"{where}: score {score} is outside [{low}, {high}] ({task.name})")
    return value


def read_glue_split(data_folder: str, task: str, split: str) -> List[Dict[str, str]]:
    """Rows ``{ID, text_a, text_b, label}`` of ``<data_folder>/<TASK>/<split>.tsv``.

    Arguments
    ---------
    data_folder : str
        The GLUE root (holding ``SST-2/``, ``MNLI/``, ...).
    task : str
        A ``GLUE_TASKS`` name.
    split : str
        ``train``, ``dev`` (MNLI: ``dev_matched`` / ``dev_mismatched``).

    Returns
    -------
    list of dict
        IDs are ``<task>-<split>-<line number>`` (1-based, as an editor shows it).

    Raises
    ------
    FileNotFoundError
        The file is not there (the message says the layout expected).
    GlueFormatError
        A header, column count, label or score that does not fit, with file and line.
    """
    spec = glue_task(task)
    path = os.path.join(data_folder, spec.folder, f"{split}.tsv")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"GLUE {spec.name}: '{path}' does not exist; expected the layout of GLUE's download script, "
            f"<data_folder>/{spec.folder}/{{train,{','.join(spec.dev_splits)}}}.tsv (--data_folder is the GLUE root)"
        )
    rows: List[Dict[str, str]] = []
    n_columns = spec.n_columns
    # a byte-order mark before MRPC's header is not part of its first name
    for number, line in utf8_lines(path, error=GlueFormatError, byte_order_mark=True):
        line = line.rstrip("\r\n")
        where = f"{path}:{number}"
        if number == 1 and spec.header is not None:
            names = line.split("\t")
            for col, want in spec.header.items():
                found = names[col] if -len(names) <= col < len(names) else None
                if found != want:
                    raise GlueFormatError(
                        f"{where}: header column {col} should be '{want}' for {spec.name}, found "
                        f"{found!r} (header {names}); is this the {spec.folder} file of GLUE's download script?"
                    )
            n_columns = len(names)
            continue
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != n_columns:
            raise GlueFormatError(
                f"{where}: expected {n_columns} tab-separated columns"
                f"{' as the header' if spec.header is not None else ''}, found {len(cols)}"
            )
        texts = [cols[c] for c in spec.text_columns]
        rows.append(
            dict(
                ID=f"{spec.name}-{split}-{number}",
                text_a=texts[0],
                text_b=texts[1] if len(texts) > 1 else "",
                label=_label(spec, cols[spec.label_column], where),
            )
        )
    if not rows:
        raise GlueFormatError(f"{path}: no examples")
    empty = empty_text_rows(rows, len(spec.text_columns) == 2)
    if empty:
        lines = [r["ID"].rsplit("-", 1)[1] for r in empty]
        logger.warning(
            "GLUE %s %s: %d of %d examples have an empty text (kept, as GLUE's own evaluation counts them; "
            "the model sees only its special tokens): %s lines %s%s",
            spec.name, split, len(empty), len(rows), path, ", ".join(lines[:10]), " ..." if len(lines) > 10 else "",
        )
    return rows


def empty_text_rows(rows: List[Dict[str, str]], pair: bool) -> List[Dict[str, str]]:
    """The rows whose sentence (or, for a sentence-pair task, one of the two) is empty or blank.

    Example
    -------
    >>> rows = [dict(ID="rte-dev-2", text_a="A man.", text_b=" "), dict(ID="rte-dev-3", text_a="A", text_b="B")]
    >>> [r["ID"] for r in empty_text_rows(rows, pair=True)], empty_text_rows(rows, pair=False)
    (['rte-dev-2'], [])
    """
    return [r for r in rows if not r["text_a"].strip() or (pair and not r["text_b"].strip())]


def prepare_glue(data_folder: str, task: str, save_folder: str) -> CorpusInfo:
    """Stage 0: ``<save_folder>/train.csv`` and one CSV per dev split, plus ``corpus.json``.

    Skipped when ``save_folder`` already holds the same task's manifests from
    the same ``data_folder``. The best checkpoint is chosen on the first dev
    split (MNLI: ``dev_matched``); every dev split is evaluated.
    """
    spec = glue_task(task)
    splits = ("train",) + spec.dev_splits
    options = {"corpus": "GLUE", "task": spec.name, "data_folder": os.path.abspath(data_folder)}

    def build():
        info = CorpusInfo(
            name=f"GLUE/{spec.name}",
            splits={s: f"{s}.csv" for s in splits},
            train_split="train",
            valid_split=spec.dev_splits[0],
            eval_splits=list(spec.dev_splits),
            labels=None if spec.labels is None else list(spec.labels),
            metrics=list(spec.metrics),
            notes={"source": f"{os.path.join(os.path.abspath(data_folder), spec.folder)}/<split>.tsv"},
        )
        rows = {s: read_glue_split(data_folder, spec.name, s) for s in splits}
        pair = len(spec.text_columns) == 2
        empty = {s: len(empty_text_rows(split_rows, pair)) for s, split_rows in rows.items()}
        if any(empty.values()):
            info.notes["examples with an empty text (kept)"] = empty
        return info, rows

    return prepare_once(save_folder, options, build)
