"""Utterance classification: pooling over valid frames, the classifier, and its cross-checked metrics."""

import builtins
import random

import pytest
import torch
from torch import nn

from float_tolerance import ELEMENTWISE, NETWORK, REDUCTION, assert_close
from speechbrain_cald.tasks import ClassificationScores, MetricDisagreement, UtteranceClassifier, masked_mean
from speechbrain_cald.tasks import classification_metrics


def test_masked_mean_ignores_padding_content():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 5)
    lengths = torch.tensor([7, 3, 1])
    ref = torch.stack([x[i, : int(n)].mean(0) for i, n in enumerate(lengths)])
    garbage = x.clone()
    for i, n in enumerate(lengths):
        garbage[i, int(n):] = 1e6
    assert_close(masked_mean(garbage, lengths), ref, factor=REDUCTION)  # a sum over other shapes
    assert_close(masked_mean(x, None), x.mean(1), factor=ELEMENTWISE)


def test_masked_mean_rejects_relative_lengths():
    with pytest.raises(ValueError, match="absolute frame counts"):
        masked_mean(torch.randn(2, 4, 3), torch.tensor([1.0, 0.5]).long())  # relative lengths cast to int


class FrameEncoder(nn.Module):
    """A padding-exact stand-in encoder: per-frame MLP over 4-sample frames (no context across frames)."""

    def __init__(self, d=6):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, d), nn.Tanh(), nn.Linear(d, d))

    def forward(self, wavs, wav_lens):
        frames = wavs.unfold(1, 4, 4)
        lengths = torch.round(wav_lens * frames.shape[1]).long()
        return self.net(frames), lengths


def test_padding_a_batch_does_not_change_logits():
    torch.manual_seed(0)
    model = UtteranceClassifier(FrameEncoder(), input_size=6, n_classes=4).eval()
    wavs = [torch.randn(n) for n in (40, 24, 8)]
    alone = torch.cat([model(w[None], torch.ones(1))[0] for w in wavs])
    batch = torch.zeros(3, 40)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
        batch[i, len(w):] = 5.0  # whatever sits in the padding
    rel = torch.tensor([len(w) / 40 for w in wavs])
    logits, lengths = model(batch, rel)
    assert lengths.tolist() == [10, 6, 2]
    assert_close(logits, alone, factor=NETWORK)  # a small MLP, the pooled sum and the head on other batch shapes


def test_head_size_set_later_and_errors():
    model = UtteranceClassifier(FrameEncoder(), input_size=6)
    with pytest.raises(RuntimeError, match="set_classes"):
        model(torch.randn(1, 8), torch.ones(1))
    model.set_classes(3)
    head = model.head
    model.set_classes(3)  # same size: the trained head is kept
    assert model.head is head and model.n_classes == 3
    model.set_classes(5)
    assert model(torch.randn(2, 8), torch.ones(2))[0].shape == (2, 5)
    with pytest.raises(ValueError, match="at least 2"):
        model.set_classes(1)


def _random_run(seed, n=200, classes=7):
    rng = random.Random(seed)
    targets = [rng.randrange(classes) for _ in range(n)]
    # mostly right, some errors, one class never predicted
    predictions = [t if rng.random() < 0.6 else rng.randrange(classes - 1) for t in targets]
    return targets, predictions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_a_per_class_count(seed):
    targets, predictions = _random_run(seed)
    labels = [f"c{i}" for i in range(7)]
    scores = ClassificationScores(labels)
    scores.append([f"u{i}" for i in range(len(targets))], torch.tensor(predictions), torch.tensor(targets)[:, None])
    s = scores.summarize()
    acc = 100.0 * sum(t == p for t, p in zip(targets, predictions)) / len(targets)
    f1s = []
    for c in sorted(set(targets) | set(predictions)):
        tp = sum(t == c and p == c for t, p in zip(targets, predictions))
        fp = sum(t != c and p == c for t, p in zip(targets, predictions))
        fn = sum(t == c and p != c for t, p in zip(targets, predictions))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    assert s["n"] == 200
    assert s["accuracy"] == pytest.approx(acc, abs=1e-9)
    assert s["macro_f1"] == pytest.approx(100 * sum(f1s) / len(f1s), abs=1e-9)


def test_scores_match_sklearn_when_installed():
    metrics = pytest.importorskip("sklearn.metrics")
    targets, predictions = _random_run(3)
    scores = ClassificationScores([str(i) for i in range(7)])
    scores.append([str(i) for i in range(len(targets))], predictions, targets)
    s = scores.summarize()
    assert s["macro_f1"] == pytest.approx(100 * metrics.f1_score(targets, predictions, average="macro"), abs=1e-9)
    assert s["accuracy"] == pytest.approx(100 * metrics.accuracy_score(targets, predictions), abs=1e-9)


def test_reference_without_sklearn_is_the_per_class_count(monkeypatch):
    targets, predictions = _random_run(4)
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("no sklearn here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    ours = ClassificationScores([str(i) for i in range(7)])
    ours.append([str(i) for i in range(len(targets))], predictions, targets)
    ref = classification_metrics.reference_macro_f1([str(t) for t in targets], [str(p) for p in predictions])
    assert ours.summarize()["macro_f1"] == pytest.approx(ref, abs=1e-9)


def test_disagreeing_sources_refuse_to_report(monkeypatch):
    scores = ClassificationScores(["a", "b"])
    scores.append(["u1", "u2", "u3"], [0, 1, 1], [0, 1, 0])
    # the globals the method sees (a doctest run may have imported the module a second time)
    monkeypatch.setitem(ClassificationScores._second_source.__globals__, "reference_macro_f1", lambda t, p: 12.5)
    with pytest.raises(MetricDisagreement, match="macro_f1.*refusing to report"):
        scores.summarize()


def test_most_confused_pairs_and_predictions_file(tmp_path):
    scores = ClassificationScores(["alarm_set", "play_music", "weather_query"])
    # weather -> music twice, alarm -> weather once, music -> alarm once
    scores.append(list("abcdefg"), [1, 1, 2, 0, 0, 1, 2], [2, 2, 0, 1, 0, 1, 2])
    assert scores.most_confused(2) == [("weather_query", "play_music", 2, 2 / 3), ("alarm_set", "weather_query", 1, 0.5)]
    assert "| weather_query | play_music | 2 | 66.7% |" in scores.confusion_markdown()
    path = scores.write_predictions(str(tmp_path / "p.csv"))
    lines = open(path).read().splitlines()
    assert lines[0] == "ID,target,prediction,correct" and lines[1] == "a,weather_query,play_music,0"


def test_scores_reject_bad_input():
    scores = ClassificationScores(["a", "b"])
    with pytest.raises(ValueError, match="outside"):
        scores.append(["u"], [2], [0])
    with pytest.raises(ValueError, match="1 ids, 2 predictions"):
        scores.append(["u"], [0, 1], [0])
    with pytest.raises(ValueError, match="no prediction"):
        scores.summarize()


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    from speechbrain_cald.testing.speech import save_tiny_speech_model

    return save_tiny_speech_model(str(tmp_path_factory.mktemp("w2v") / "wav2vec2"))


@pytest.mark.parametrize("mixer", [None, "bimamba2", "linformer"])
def test_wav2vec2_classifier_logits_ignore_padding(tiny_wav2vec2, mixer):
    """Teacher and converted students: an utterance's logits are the same alone and padded in a batch."""
    from speechbrain_cald.convert import to_linear_time
    from speechbrain_cald.lobes.hf_speech import HFSpeechEncoder

    torch.manual_seed(0)
    model = UtteranceClassifier(HFSpeechEncoder(tiny_wav2vec2), n_classes=4)
    if mixer == "bimamba2":
        model = to_linear_time(model, "bimamba2", d_state=16)
    elif mixer == "linformer":
        model = to_linear_time(model, "linformer", k=8, max_len=64, too_long="interpolate")
    model.eval()
    lengths = [9600, 6400, 3520]
    wavs = torch.randn(3, 9600)
    with torch.no_grad():
        alone = torch.cat([model(wavs[i:i + 1, :n], torch.ones(1))[0] for i, n in enumerate(lengths)])
        padded, frames = model(wavs, torch.tensor(lengths) / 9600)
    assert frames.tolist() == [29, 19, 10]
    assert_close(padded, alone, factor=NETWORK)  # a whole network on other batch shapes
