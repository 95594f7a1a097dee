"""GLUE metrics: ours against hand-computed values and the second source; disagreement refused."""

import math
import random

import pytest

from speechbrain_cald.data.glue import GLUE_TASKS
from speechbrain_cald.tasks import text_metrics
from speechbrain_cald.tasks.text_metrics import METRICS, MetricDisagreement, compute_metrics, task_score


def test_hand_computed_values():
    pred, ref = [1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]
    # tp 2, fp 1, fn 1, tn 2
    values = compute_metrics(["accuracy", "f1", "mcc"], pred, ref)
    assert values["accuracy"] == pytest.approx(100 * 4 / 6)
    assert values["f1"] == pytest.approx(100 * 2 * 2 / (2 * 2 + 1 + 1))
    assert values["mcc"] == pytest.approx(100 * (2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3))
    # Spearman with ties: ranks x = [1, 2.5, 2.5, 4], y = [1, 2, 3, 4]
    rho = compute_metrics(["spearman", "pearson"], [0.1, 0.5, 0.5, 0.9], [1.0, 2.0, 3.0, 4.0])
    rx, ry = [1, 2.5, 2.5, 4], [1, 2, 3, 4]
    mx, my = sum(rx) / 4, sum(ry) / 4
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    expected = cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    assert rho["spearman"] == pytest.approx(100 * expected)


def test_degenerate_cases_agree_with_the_second_source():
    assert compute_metrics(["f1", "mcc"], [0, 0, 0], [0, 1, 0]) == {"f1": 0.0, "mcc": 0.0}
    constant = compute_metrics(["pearson", "spearman"], [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert math.isnan(constant["pearson"]) and math.isnan(constant["spearman"])
    assert task_score({"pearson": float("nan"), "spearman": 50.0}) == 50.0


@pytest.mark.parametrize("seed", range(5))
def test_random_predictions_multiclass_and_scores(seed):
    rng = random.Random(seed)
    n = rng.randint(20, 200)
    labels, preds = [rng.randrange(3) for _ in range(n)], [rng.randrange(3) for _ in range(n)]
    compute_metrics(["accuracy", "mcc"], preds, labels)  # raises if ours and sklearn differ
    scores = [rng.uniform(0, 5) for _ in range(n)]
    guesses = [s + rng.gauss(0, 1) if i % 4 else round(s) for i, s in enumerate(scores)]  # ties included
    values = compute_metrics(["pearson", "spearman"], guesses, scores)
    assert 0 < values["pearson"] <= 100 and 0 < values["spearman"] <= 100


@pytest.mark.parametrize("task", sorted(GLUE_TASKS))
def test_every_glue_tasks_metrics(task):
    spec = GLUE_TASKS[task]
    rng = random.Random(task)
    if spec.labels is None:
        ref = [rng.uniform(0, 5) for _ in range(30)]
        pred = [r + rng.gauss(0, 0.5) for r in ref]
    else:
        ref = [rng.randrange(spec.num_labels) for _ in range(30)]
        pred = [r if rng.random() < 0.7 else rng.randrange(spec.num_labels) for r in ref]
    values = compute_metrics(spec.metrics, pred, ref)
    assert list(values) == list(spec.metrics)
    assert all(-100 <= v <= 100 for v in values.values())
    perfect = compute_metrics(spec.metrics, ref, ref)
    assert all(v == pytest.approx(100.0) for v in perfect.values())


def test_disagreement_is_refused(monkeypatch):
    broken = text_metrics.Metric("accuracy", lambda p, r: 0.5, METRICS["accuracy"].reference)
    monkeypatch.setitem(METRICS, "accuracy", broken)
    with pytest.raises(MetricDisagreement, match="accuracy: ours 0.5 vs"):
        compute_metrics(["accuracy"], [1, 1], [1, 1])


def test_argument_errors():
    with pytest.raises(KeyError, match="unknown metric"):
        compute_metrics(["bleu"], [1], [1])
    with pytest.raises(ValueError, match="as many predictions as labels"):
        compute_metrics(["accuracy"], [1, 0], [1])
