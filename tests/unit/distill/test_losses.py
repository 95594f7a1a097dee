"""layer_distill_loss / logits_distill_loss: reference values, padding invariance, errors."""

import pytest
import torch

from speechbrain_cald.distill.losses import layer_distill_loss, logits_distill_loss
from speechbrain_cald.distill.taps import lengths_to_mask
from float_tolerance import REDUCTION, assert_close


def reference_layer_loss(student, teacher, lengths, layer_map, layer_norm=True, features="mean", layers="mean"):
    """Frame by frame, in float64, with an explicit layer norm (the CALD speech reference's
    normalisation by default: mean over features, sum over frames / frames, mean over layers)."""

    def ln(v):
        v = v.double()
        if not layer_norm:
            return v
        return (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + 1e-5)

    per_layer = []
    for i, j in enumerate(layer_map):
        total, frames = 0.0, 0
        for b, n in enumerate(lengths.tolist()):
            for t in range(n):
                sq = (ln(student[i][b, t]) - ln(teacher[j][b, t])) ** 2
                total += float(sq.mean() if features == "mean" else sq.sum())
                frames += 1
        per_layer.append(total / frames)
    return sum(per_layer) / (len(per_layer) if layers == "mean" else 1)


def pad(x, frames, fill):
    """Pad (B, T, ...) along time to ``frames`` with ``fill``."""
    extra = torch.full((x.shape[0], frames - x.shape[1], *x.shape[2:]), fill, dtype=x.dtype)
    return torch.cat([x, extra], dim=1)


def test_layer_loss_matches_frame_by_frame_reference():
    lengths = torch.tensor([5, 2, 4])
    s = [torch.randn(3, 5, 6) * 3 for _ in range(2)]
    t = [torch.randn(3, 5, 6) + 1 for _ in range(4)]
    got = layer_distill_loss(s, t, lengths_to_mask(lengths, 5), layer_map=[1, 3])
    assert_close(float(got), reference_layer_loss(s, t, lengths, [1, 3]), factor=REDUCTION, dtype=torch.float32)


@pytest.mark.parametrize(
    "options",
    [
        dict(layer_norm=False, feature_reduction="mean", layer_reduction="sum"),
        dict(layer_norm=True, feature_reduction="sum", layer_reduction="mean"),
        dict(layer_norm=False, feature_reduction="sum", layer_reduction="sum"),
    ],
)
def test_layer_loss_options_match_reference(options):
    lengths = torch.tensor([4, 1, 3])
    s = [torch.randn(3, 4, 6) * 2 for _ in range(3)]
    t = [torch.randn(3, 4, 6) - 1 for _ in range(3)]
    got = layer_distill_loss(s, t, lengths_to_mask(lengths, 4), **options)
    want = reference_layer_loss(
        s, t, lengths, [0, 1, 2], options["layer_norm"], options["feature_reduction"], options["layer_reduction"]
    )
    assert_close(float(got), want, factor=REDUCTION, dtype=torch.float32)


def test_layer_loss_rejects_unknown_reduction():
    s = [torch.randn(1, 2, 3)]
    with pytest.raises(ValueError, match="feature_reduction"):
        layer_distill_loss(s, s, feature_reduction="max")


@pytest.mark.parametrize("fill", [0.0, 7.0, float("nan")])
def test_layer_loss_unchanged_by_extra_padding(fill):
    lengths = torch.tensor([5, 3])
    s = [torch.randn(2, 5, 6) for _ in range(3)]
    t = [torch.randn(2, 5, 6) for _ in range(3)]
    base = layer_distill_loss(s, t, lengths_to_mask(lengths, 5))
    padded = layer_distill_loss(
        [pad(x, 11, fill) for x in s], [pad(x, 11, fill) for x in t], lengths_to_mask(lengths, 11)
    )
    assert_close(base, padded, factor=REDUCTION)  # other shapes: other summation orders


def test_layer_loss_is_per_frame_not_per_batch():
    s = [torch.randn(2, 4, 6)]
    t = [torch.randn(2, 4, 6)]
    once = layer_distill_loss(s, t)
    twice = layer_distill_loss([torch.cat([s[0], s[0]])], [torch.cat([t[0], t[0]])])
    assert_close(once, twice, factor=REDUCTION)


def test_layer_loss_gradient_reaches_student_only():
    s = [torch.randn(2, 4, 6, requires_grad=True)]
    t = [torch.randn(2, 4, 6, requires_grad=True)]
    layer_distill_loss(s, t).backward()
    assert s[0].grad is not None and s[0].grad.abs().sum() > 0
    assert t[0].grad is None


def test_layer_loss_errors_name_the_problem():
    s = [torch.randn(2, 4, 6)]
    with pytest.raises(ValueError, match="layer_map has 2 entries"):
        layer_distill_loss(s, s, layer_map=[0, 0])
    with pytest.raises(IndexError, match="layer_map\\[0\\] = 3"):
        layer_distill_loss(s, s, layer_map=[3])
    with pytest.raises(ValueError, match="differ in shape"):
        layer_distill_loss(s, [torch.randn(2, 4, 5)])
    with pytest.raises(ValueError, match="mask should be"):
        layer_distill_loss(s, s, torch.ones(2, 5, dtype=torch.bool))


def reference_kd(student, teacher, lengths, temperature):
    total, frames = 0.0, 0
    for b, n in enumerate(lengths.tolist()):
        for t in range(n):
            p = torch.softmax(teacher[b, t].double() / temperature, -1)
            q = torch.softmax(student[b, t].double() / temperature, -1)
            total += float((p * (p.log() - q.log())).sum())
            frames += 1
    return total / frames


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_logits_kd_matches_reference_without_t_squared(temperature):
    lengths = torch.tensor([4, 2])
    s, t = torch.randn(2, 4, 7), torch.randn(2, 4, 7) * 2
    got = logits_distill_loss(s, t, lengths_to_mask(lengths, 4), temperature)
    assert_close(float(got), reference_kd(s, t, lengths, temperature), factor=REDUCTION, dtype=torch.float32)


def test_logits_kd_unchanged_by_extra_padding():
    lengths = torch.tensor([4, 2])
    s, t = torch.randn(2, 4, 7), torch.randn(2, 4, 7)
    base = logits_distill_loss(s, t, lengths_to_mask(lengths, 4))
    padded = logits_distill_loss(
        pad(s, 9, float("nan")), pad(t, 9, 3.0), lengths_to_mask(lengths, 9)
    )
    assert_close(base, padded, factor=REDUCTION)


def test_logits_kd_utterance_logits_and_errors():
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    expected = torch.nn.functional.kl_div(
        torch.log_softmax(s / 2, -1), torch.log_softmax(t / 2, -1), log_target=True, reduction="batchmean"
    )
    assert_close(logits_distill_loss(s, t), expected, factor=REDUCTION)
    with pytest.raises(ValueError, match="differ in shape"):
        logits_distill_loss(s, torch.randn(3, 5))
    with pytest.raises(ValueError, match="temperature"):
        logits_distill_loss(s, t, temperature=0)
