"""GLUE-style metrics, each computed twice (ours and a second source) and refused on disagreement.

``METRICS`` is the registry: name -> ``Metric`` with our implementation (NumPy,
written from the definitions) and the reference one (scikit-learn or SciPy,
the implementations GLUE's own evaluation and transformers' ``evaluate``
metrics call). ``compute_metrics`` runs both and raises ``MetricDisagreement``
when they differ by more than ``1e-9`` (both work in float64 on the same
predictions, so any larger gap is a bug, not rounding).

| name | definition | second source |
|---|---|---|
| accuracy | share of predictions equal to the label | ``sklearn.metrics.accuracy_score`` |
| f1 | F1 of class 1 (MRPC, QQP: "equivalent", "duplicate") | ``sklearn.metrics.f1_score`` |
| mcc | Matthews correlation (multi-class form of Gorodkin 2004) | ``sklearn.metrics.matthews_corrcoef`` |
| pearson | Pearson correlation of scores | ``scipy.stats.pearsonr`` |
| spearman | Pearson correlation of ranks (ties: mean rank) | ``scipy.stats.spearmanr`` |

Values are reported times 100, as the GLUE leaderboard shows them; a task's
``score`` is the mean of its metrics (GLUE's per-task score).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Callable, Dict, Sequence

import numpy as np

__all__ = ["METRICS", "Metric", "MetricDisagreement", "compute_metrics", "task_score"]

TOLERANCE = 1e-9


class MetricDisagreement(RuntimeError):
    """Our metric and the second source's differ: nothing is reported."""


def _accuracy(pred: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean(pred == ref))


def _f1(pred: np.ndarray, ref: np.ndarray) -> float:
    tp = float(np.sum((pred == 1) & (ref == 1)))
    wrong = float(np.sum(pred != ref))
    return 0.0 if tp == 0 else tp / (tp + wrong / 2)


def _mcc(pred: np.ndarray, ref: np.ndarray) -> float:
    classes = np.union1d(pred, ref)
    index = {c: i for i, c in enumerate(classes.tolist())}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    for p, r in zip(pred.tolist(), ref.tolist()):
        confusion[index[r], index[p]] += 1
    t, p = confusion.sum(1), confusion.sum(0)
    c, s = np.trace(confusion), confusion.sum()
    denominator = math.sqrt((s * s - float(p @ p)) * (s * s - float(t @ t)))
    return 0.0 if denominator == 0 else float(c * s - float(t @ p)) / denominator


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return float("nan") if denominator == 0 else float(x @ y) / denominator


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    return _pearson(_ranks(x), _ranks(y))


def _sklearn(name: str) -> Callable:
    try:
        from sklearn import metrics
    except ImportError:  # pinned in requirements.txt
        raise ImportError(
            "text metrics are checked against scikit-learn, which is not installed: pip install scikit-learn==1.9.1"
        ) from None
    return getattr(metrics, name)


def _ref_accuracy(pred, ref):
    return float(_sklearn("accuracy_score")(ref, pred))


def _ref_f1(pred, ref):
    return float(_sklearn("f1_score")(ref, pred, pos_label=1, average="binary", zero_division=0.0))


def _ref_mcc(pred, ref):
    return float(_sklearn("matthews_corrcoef")(ref, pred))


def _scipy_corr(name: str, x, y) -> float:
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: NaN, as ours
        return float(getattr(stats, name)(x, y)[0])


@dataclasses.dataclass(frozen=True)
class Metric:
    """One metric: a title, our implementation and the second source's.

    ``regression``: computed on scores (floats) rather than class ids.
    """

    title: str
    ours: Callable[[np.ndarray, np.ndarray], float]
    reference: Callable[[np.ndarray, np.ndarray], float]
    regression: bool = False


METRICS: Dict[str, Metric] = {
    "accuracy": Metric("accuracy", _accuracy, _ref_accuracy),
    "f1": Metric("F1", _f1, _ref_f1),
    "mcc": Metric("Matthews corr.", _mcc, _ref_mcc),
    "pearson": Metric("Pearson", _pearson, lambda x, y: _scipy_corr("pearsonr", x, y), regression=True),
    "spearman": Metric("Spearman", _spearman, lambda x, y: _scipy_corr("spearmanr", x, y), regression=True),
}


def compute_metrics(names: Sequence[str], predictions, labels) -> Dict[str, float]:
    """Each named metric times 100, computed by us and by the second source.

    Arguments
    ---------
    names : sequence of str
        Names of ``METRICS``.
    predictions, labels : sequence
        Class ids (classification) or scores (regression), one per example.

    Returns
    -------
    dict
        Name -> value x 100 (NaN when undefined, e.g. a correlation of a
        constant prediction).

    Raises
    ------
    MetricDisagreement
        When the two computations of a metric differ by more than 1e-9.

    Example
    -------
    >>> compute_metrics(["accuracy", "f1", "mcc"], [1, 0, 1, 1], [1, 0, 0, 1])
    {'accuracy': 75.0, 'f1': 80.0, 'mcc': 57.73502691896258}
    >>> round(compute_metrics(["spearman"], [0.1, 0.4, 0.2], [1.0, 3.0, 2.0])["spearman"], 6)
    100.0
    """
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; expected some of {sorted(METRICS)}")
    if len(predictions) != len(labels) or len(labels) == 0:
        raise ValueError(f"metrics need as many predictions as labels (> 0), got {len(predictions)} and {len(labels)}")
    out: Dict[str, float] = {}
    for name in names:
        metric = METRICS[name]
        dtype = np.float64 if metric.regression else np.int64
        pred, ref = np.asarray(predictions, dtype=dtype), np.asarray(labels, dtype=dtype)
        ours, theirs = metric.ours(pred, ref), metric.reference(pred, ref)
        both_nan = math.isnan(ours) and math.isnan(theirs)
        if not both_nan and not abs(ours - theirs) <= TOLERANCE:
            raise MetricDisagreement(
                f"{metric.title}: ours {ours!r} vs {metric.reference.__name__} {theirs!r} on {len(ref)} examples"
            )
        out[name] = 100.0 * float(ours)
    return out


def task_score(values: Dict[str, float]) -> float:
    """Mean of a task's metric values (GLUE's per-task score); NaN-free values only.

    Example
    -------
    >>> task_score({"f1": 80.0, "accuracy": 70.0})
    75.0
    """
    finite = [v for v in values.values() if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")
