"""Accuracy, macro-F1 and the confusion of a classifier, each computed twice.

``ClassificationScores`` accumulates (id, target, prediction) triples and
computes its numbers from a confusion matrix (torch). The same numbers come a
second time from independent code: accuracy and the confusion counts from
SpeechBrain's ``ClassificationStats``, macro-F1 from scikit-learn's ``f1_score``
when it is installed, else from a per-class count written separately here.
``summarize`` refuses to report (``MetricDisagreement``) when the two differ,
as the ASR evaluation does with SpeechBrain's and jiwer's WER.

Macro-F1 is the mean F1 over the classes that occur among the targets or the
predictions (scikit-learn's default); a class that is never predicted scores 0.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from speechbrain.utils.metric_stats import ClassificationStats

__all__ = ["ClassificationScores", "MetricDisagreement", "reference_macro_f1"]

Labels = Union[torch.Tensor, Sequence[int]]


class MetricDisagreement(RuntimeError):
    """Two implementations of a metric gave different numbers: nothing is reported."""


def reference_macro_f1(targets: Sequence, predictions: Sequence) -> float:
    """Macro-F1 (%) of two label lists: scikit-learn's when installed, else a per-class count.

    Example
    -------
    >>> round(reference_macro_f1(["a", "a", "b", "c"], ["a", "b", "b", "b"]), 4)
    38.8889
    """
    try:
        from sklearn.metrics import f1_score
    except ImportError:
        f1_score = None
    if f1_score is not None:
        return 100.0 * float(f1_score(list(targets), list(predictions), average="macro", zero_division=0))
    tp: Counter = Counter()
    fp: Counter = Counter()
    fn: Counter = Counter()
    for t, p in zip(targets, predictions):
        if t == p:
            tp[t] += 1
        else:
            fp[p] += 1
            fn[t] += 1
    scores = []
    for label in set(targets) | set(predictions):
        precision = tp[label] / (tp[label] + fp[label]) if tp[label] + fp[label] else 0.0
        recall = tp[label] / (tp[label] + fn[label]) if tp[label] + fn[label] else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return 100.0 * sum(scores) / len(scores)


def _as_list(x: Labels) -> List[int]:
    if isinstance(x, torch.Tensor):
        if x.dim() == 2 and x.shape[1] == 1:  # SpeechBrain's (B, 1) label tensors
            x = x[:, 0]
        return [int(v) for v in x.reshape(-1).tolist()]
    return [int(v) for v in x]


class ClassificationScores:
    """Accumulates a classifier's predictions; accuracy, macro-F1 and confusion, cross-checked.

    Arguments
    ---------
    labels : sequence of str
        Class names by class id (``label_encoder.ind2lab`` order).
    tolerance : float
        Largest difference (in %) allowed between the two computations.

    Example
    -------
    >>> scores = ClassificationScores(["alarm_set", "play_music", "weather_query"])
    >>> scores.append(["u1", "u2", "u3", "u4"], predictions=[0, 1, 1, 2], targets=[0, 1, 2, 2])
    >>> s = scores.summarize()
    >>> s["accuracy"], round(s["macro_f1"], 2), s["n"]
    (75.0, 77.78, 4)
    >>> scores.most_confused(1)
    [('weather_query', 'play_music', 1, 0.5)]
    """

    def __init__(self, labels: Sequence[str], tolerance: float = 1e-6):
        self.labels = [str(label) for label in labels]
        self.tolerance = tolerance
        self.ids: List[str] = []
        self.targets: List[int] = []
        self.predictions: List[int] = []

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, ids: Sequence[str], predictions: Labels, targets: Labels) -> None:
        """Add a batch: ``ids``, predicted class ids and target class ids (tensors or lists)."""
        predictions, targets = _as_list(predictions), _as_list(targets)
        if not len(ids) == len(predictions) == len(targets):
            raise ValueError(
                f"ClassificationScores.append: {len(ids)} ids, {len(predictions)} predictions, {len(targets)} targets"
            )
        n = len(self.labels)
        bad = [v for v in predictions + targets if not 0 <= v < n]
        if bad:
            raise ValueError(f"ClassificationScores.append: class ids {sorted(set(bad))[:5]} outside [0, {n})")
        self.ids += [str(i) for i in ids]
        self.predictions += predictions
        self.targets += targets

    def confusion(self) -> torch.Tensor:
        """``(C, C)`` counts: row = target class, column = predicted class."""
        n = len(self.labels)
        flat = torch.tensor(self.targets, dtype=torch.long) * n + torch.tensor(self.predictions, dtype=torch.long)
        return torch.bincount(flat, minlength=n * n).reshape(n, n)

    def _ours(self) -> Dict[str, float]:
        conf = self.confusion().double()
        tp = conf.diagonal()
        support, predicted = conf.sum(1), conf.sum(0)
        present = (support + predicted) > 0  # classes among the targets or the predictions
        f1 = 2 * tp / (support + predicted).clamp_min(1)  # = 2PR / (P + R); 0 when tp = 0
        return {
            "accuracy": 100.0 * float(tp.sum() / conf.sum()),
            "macro_f1": 100.0 * float(f1[present].mean()),
        }

    def _second_source(self) -> Tuple[Dict[str, float], Dict[Tuple[str, str], int]]:
        stats = ClassificationStats()
        targets = [self.labels[t] for t in self.targets]
        predictions = [self.labels[p] for p in self.predictions]
        stats.append(self.ids, predictions, targets)
        summary = stats.summarize()
        pairs = {}
        matrix = summary["confusion_matrix"]
        for i, key in enumerate(summary["keys"]):
            for j, pred in enumerate(summary["predictions"]):
                if matrix[i, j] > 0:
                    pairs[(key, pred)] = int(matrix[i, j])
        numbers = {"accuracy": 100.0 * float(summary["accuracy"]), "macro_f1": reference_macro_f1(targets, predictions)}
        return numbers, pairs

    def summarize(self) -> Dict[str, float]:
        """``{"accuracy": %, "macro_f1": %, "n": count}``; ``MetricDisagreement`` if the two sources differ."""
        if not self.ids:
            raise ValueError("ClassificationScores.summarize: no prediction was appended")
        ours = self._ours()
        theirs, pairs = self._second_source()
        for key, value in ours.items():
            if abs(value - theirs[key]) > self.tolerance:
                raise MetricDisagreement(
                    f"{key}: ours {value:.8f} vs the second source {theirs[key]:.8f} (SpeechBrain ClassificationStats "
                    "for accuracy, scikit-learn or the per-class reference for macro-F1): refusing to report"
                )
        conf = self.confusion()
        for (target, pred), count in pairs.items():
            ours_count = int(conf[self.labels.index(target), self.labels.index(pred)])
            if ours_count != count:
                raise MetricDisagreement(
                    f"confusion ({target} -> {pred}): ours {ours_count} vs SpeechBrain's {count}: refusing to report"
                )
        return {**ours, "n": len(self.ids)}

    def most_confused(self, k: int = 10) -> List[Tuple[str, str, int, float]]:
        """The ``k`` most frequent errors: ``(target, predicted, count, share of the target's utterances)``.

        Ties are broken by label order, so the list is deterministic.
        """
        conf = self.confusion()
        support = conf.sum(1)
        errors = [
            (int(conf[t, p]), t, p)
            for t in range(len(self.labels))
            for p in range(len(self.labels))
            if t != p and conf[t, p] > 0
        ]
        errors.sort(key=lambda e: (-e[0], e[1], e[2]))
        return [(self.labels[t], self.labels[p], c, c / int(support[t])) for c, t, p in errors[:k]]

    def confusion_markdown(self, k: int = 10) -> str:
        """A markdown table of :meth:`most_confused` (or a line saying there is no error)."""
        pairs = self.most_confused(k)
        if not pairs:
            return "No utterance was misclassified."
        lines = ["| target | predicted as | count | share of target |", "|---|---|---:|---:|"]
        lines += [f"| {t} | {p} | {c} | {100 * s:.1f}% |" for t, p, c, s in pairs]
        return "\n".join(lines)

    def write_predictions(self, path: str, extra: Optional[Dict[str, Sequence]] = None) -> str:
        """CSV of ``ID, target, prediction, correct`` per utterance (``extra`` columns appended)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        extra = extra or {}
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["ID", "target", "prediction", "correct", *extra])
            for i, (uid, t, p) in enumerate(zip(self.ids, self.targets, self.predictions)):
                writer.writerow([uid, self.labels[t], self.labels[p], int(t == p), *(v[i] for v in extra.values())])
        return path
