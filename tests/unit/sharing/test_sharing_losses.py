"""distill/sharing_losses.py: masked cosine and attention-KL terms (MiniALBERT)."""

import pytest
import torch
import torch.nn.functional as F

from speechbrain_cald.distill.sharing_losses import attention_kl_loss, hidden_cosine_loss
from float_tolerance import REDUCTION, assert_close


def _pad_states(states, extra):
    return [F.pad(s, (0, 0, 0, extra), value=123.0) for s in states]


def test_cosine_matches_per_frame_reference_and_layer_map():
    torch.manual_seed(0)
    s = [torch.randn(2, 5, 8) for _ in range(2)]
    t = [torch.randn(2, 5, 8) for _ in range(4)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    ref = 0.0
    for i, m in enumerate([1, 3]):
        vals = [1 - F.cosine_similarity(s[i][b, f], t[m][b, f], dim=0)
                for b in range(2) for f in range(5) if mask[b, f]]
        ref += torch.stack(vals).mean()
    assert_close(hidden_cosine_loss(s, t, mask, layer_map=[1, 3]), ref / 2, factor=REDUCTION)


def test_cosine_is_padding_invariant_and_ignores_nan_padding():
    torch.manual_seed(0)
    s, t = [torch.randn(2, 5, 8)], [torch.randn(2, 5, 8)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    base = hidden_cosine_loss(s, t, mask)
    s_pad, t_pad = _pad_states(s, 4), _pad_states(t, 4)
    s_pad[0][:, 5:] = float("nan")
    mask_pad = F.pad(mask, (0, 4), value=False)
    assert_close(hidden_cosine_loss(s_pad, t_pad, mask_pad), base, factor=REDUCTION)


def test_cosine_gradient_reaches_student_only():
    s = [torch.randn(1, 3, 4, requires_grad=True)]
    t = [torch.randn(1, 3, 4, requires_grad=True)]
    hidden_cosine_loss(s, t).backward()
    assert s[0].grad is not None and t[0].grad is None


def _masked_attention(scores, mask):
    return torch.softmax(scores.masked_fill(~mask[:, None, None, :], float("-inf")), -1)


def test_attention_kl_matches_reference_on_valid_rows():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]).bool()
    a = _masked_attention(torch.randn(2, 3, 4, 4), mask)
    b = _masked_attention(torch.randn(2, 3, 4, 4), mask)
    rows = []
    for bi in range(2):
        for q in range(4):
            if mask[bi, q]:
                t, s = b[bi, :, q], a[bi, :, q]
                kl = (t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).sum(-1)
                rows.append(kl.mean())
    assert_close(attention_kl_loss([a], [b], mask), torch.stack(rows).mean(), factor=REDUCTION)


def test_attention_kl_is_padding_invariant():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]).bool()
    sa, sb = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    base = attention_kl_loss([_masked_attention(sa, mask)], [_masked_attention(sb, mask)], mask)
    # the same batch with 3 more padded frames: padded keys get no attention
    mask_pad = F.pad(mask, (0, 3), value=False)
    pa = F.pad(sa, (0, 3, 0, 3), value=5.0)
    pb = F.pad(sb, (0, 3, 0, 3), value=-5.0)
    padded = attention_kl_loss([_masked_attention(pa, mask_pad)], [_masked_attention(pb, mask_pad)], mask_pad)
    assert_close(padded, base, factor=REDUCTION)
    # unmasked student attention over padded keys: those keys are dropped and rows renormalised
    free = attention_kl_loss([torch.softmax(pa, -1)], [_masked_attention(pb, mask_pad)], mask_pad)
    assert torch.isfinite(free)


def test_losses_reject_bad_shapes_and_maps():
    s = [torch.randn(2, 5, 8)]
    with pytest.raises(ValueError, match="layer_map has 2 entries"):
        hidden_cosine_loss(s, s, layer_map=[0, 0])
    with pytest.raises(IndexError, match="layer_map\\[0\\] = 3"):
        hidden_cosine_loss(s, s, layer_map=[3])
    with pytest.raises(ValueError, match="mask should be"):
        hidden_cosine_loss(s, s, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, H, T, T\)"):
        attention_kl_loss(s, s)
