"""LinformerAttention: reduction to softmax attention, padding and batch
invariance, share modes, the too-long policy, errors."""

import pytest
import torch
import torch.nn.functional as F

from speechbrain_cald.nnet.linformer import LinformerAttention, LinformerProjection
from float_tolerance import LAYER, assert_close

D_MODEL, HEADS = 16, 4


def make_attention(max_len=20, k=6, **kwargs):
    torch.manual_seed(0)
    return LinformerAttention(D_MODEL, HEADS, max_len, k=k, **kwargs).eval()


def reference_linformer(attn, x_one):
    """One unpadded sequence (T, D), the Linformer formulas written out per head."""
    T = x_one.shape[0]
    E = attn.E.weight[:, :T] / T**0.5
    Fv = attn.value_projection.weight[:, :T] / T**0.5
    q, key, val = attn.q_proj(x_one), attn.k_proj(x_one), attn.v_proj(x_one)
    dh = D_MODEL // HEADS
    heads = []
    for i in range(HEADS):
        cols = slice(i * dh, (i + 1) * dh)
        k_low, v_low = E @ key[:, cols], Fv @ val[:, cols]
        weights = torch.softmax(q[:, cols] @ k_low.T / dh**0.5, dim=-1)
        heads.append(weights @ v_low)
    return attn.out_proj(torch.cat(heads, -1))


@pytest.mark.parametrize("T", [4, 13], ids=["fewer frames than k (linear first)", "more frames than k (project first)"])
@pytest.mark.parametrize("share", ["none", "kv"])
def test_matches_written_out_formula(share, T):
    attn = make_attention(share=share)
    x = torch.randn(T, D_MODEL)
    with torch.no_grad():
        assert_close(attn(x[None])[0], reference_linformer(attn, x), factor=LAYER)


def test_equals_softmax_attention_when_k_is_T_and_projections_are_identity():
    T = 9
    attn = make_attention(max_len=T, k=T, scale_by_length=False)
    with torch.no_grad():
        attn.E.weight.copy_(torch.eye(T))
        attn.F.weight.copy_(torch.eye(T))
    mha = torch.nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        mha.out_proj.weight.copy_(attn.out_proj.weight)
        mha.out_proj.bias.copy_(attn.out_proj.bias)
    x = torch.randn(3, T, D_MODEL)
    with torch.no_grad():
        expected, _ = mha(x, x, x, need_weights=False)
        assert_close(attn(x), expected, factor=LAYER)
    # and the sqrt(length) scaling is exactly a sqrt(T) identity
    scaled = make_attention(max_len=T, k=T)
    scaled.load_state_dict(attn.state_dict())
    with torch.no_grad():
        scaled.E.weight.mul_(T**0.5)
        scaled.F.weight.mul_(T**0.5)
        assert_close(scaled(x), expected, factor=LAYER)


@pytest.mark.parametrize("share", ["none", "kv"])
def test_padding_and_batch_invariance(share):
    attn = make_attention(share=share)
    lengths = torch.tensor([11, 4, 7])
    x = torch.randn(3, 11, D_MODEL)
    garbage = x.clone()
    for i, n in enumerate(lengths.tolist()):
        garbage[i, n:] = 50 * torch.randn(11 - n, D_MODEL)
    with torch.no_grad():
        y = attn(x, lengths=lengths)
        assert torch.equal(y, attn(garbage, lengths=lengths))
        for i, n in enumerate(lengths.tolist()):
            alone = attn(x[i : i + 1, :n])
            assert_close(y[i, :n], alone[0], factor=LAYER)
            assert torch.equal(y[i, n:], torch.zeros_like(y[i, n:]))
        # same sample, another batch of another padded length
        other = torch.cat([x[1:2, :4], torch.zeros(1, 15, D_MODEL)], 1)
        assert_close(attn(other, lengths=torch.tensor([4]))[0, :4], y[1, :4], factor=LAYER)


def test_gradients_reach_all_parameters():
    attn = make_attention(share="none").train()
    y = attn(torch.randn(2, 10, D_MODEL), lengths=torch.tensor([10, 6]))
    y.square().sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # only the first 10 projection columns were used
    assert attn.E.weight.grad[:, :10].abs().sum() > 0
    assert torch.equal(attn.E.weight.grad[:, 10:], torch.zeros_like(attn.E.weight.grad[:, 10:]))


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_share_modes_own_the_right_parameters():
    max_len, k = 20, 6
    linears = 4 * (D_MODEL * D_MODEL + D_MODEL)
    none = make_attention(max_len, k, share="none")
    kv = make_attention(max_len, k, share="kv")
    assert _count(none) == linears + 2 * k * max_len
    assert _count(kv) == linears + k * max_len
    assert kv.value_projection is kv.E and none.value_projection is none.F
    shared = LinformerProjection(max_len, k)
    layers = torch.nn.ModuleList(
        LinformerAttention(D_MODEL, HEADS, max_len, k=k, share="layer", shared_proj=shared)
        for _ in range(3)
    )
    assert _count(layers) == 3 * linears + k * max_len
    assert all(layer.E.weight is shared.weight for layer in layers)
    # state_dict round trip keeps the sharing
    other = LinformerProjection(max_len, k)
    clone = torch.nn.ModuleList(
        LinformerAttention(D_MODEL, HEADS, max_len, k=k, share="layer", shared_proj=other)
        for _ in range(3)
    )
    clone.load_state_dict(layers.state_dict(), strict=True)
    assert torch.equal(clone[2].E.weight, shared.weight) and clone[2].E is clone[0].E


def test_projection_init_is_standard_normal():
    torch.manual_seed(0)
    weight = LinformerProjection(max_len=400, k=256).weight
    assert abs(weight.mean().item()) < 0.02 and abs(weight.std().item() - 1) < 0.02


def test_too_long_raises_by_default_naming_the_limit():
    attn = make_attention(max_len=8)
    with pytest.raises(ValueError, match=r"10 valid frames.*max_len=8.*too_long='interpolate'"):
        attn(torch.randn(1, 10, D_MODEL))
    # padding beyond max_len is fine: only valid frames count
    x = torch.randn(2, 12, D_MODEL)
    with torch.no_grad():
        y = attn(x, lengths=torch.tensor([8, 5]))
        assert_close(y[0, :8], attn(x[:1, :8])[0], factor=LAYER)


def test_too_long_interpolates_the_projection_per_sequence():
    max_len, n = 8, 13
    attn = make_attention(max_len=max_len, too_long="interpolate")
    x = torch.randn(2, n, D_MODEL)
    lengths = torch.tensor([n, 6])
    with torch.no_grad():
        y = attn(x, lengths=lengths)
        # a layer whose projections are resampled to n columns by torch's own interpolation
        stretched = LinformerAttention(D_MODEL, HEADS, n, k=attn.k).eval()
        state = dict(attn.state_dict())
        for name in ("E.weight", "F.weight"):
            state[name] = F.interpolate(state[name][None], size=n, mode="linear", align_corners=True)[0]
        stretched.load_state_dict(state)
        assert_close(y[0], stretched(x[:1])[0], factor=LAYER)
        # the short sequence still uses the exact columns
        assert_close(y[1, :6], attn(x[1:2, :6])[0], factor=LAYER)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(share="heads"), "unknown share 'heads'"),
        (dict(share="layer"), "shared_proj=LinformerProjection"),
        (dict(share="kv", shared_proj=LinformerProjection(20, 6)), "only then"),
        (dict(share="layer", shared_proj=LinformerProjection(30, 6)), "max_len=30"),
        (dict(too_long="truncate"), "unknown too_long 'truncate'"),
        (dict(num_heads=5), "num_heads=5 must divide d_model=16"),
    ],
)
def test_bad_options_raise_clear_errors(kwargs, message):
    options = dict(d_model=D_MODEL, num_heads=HEADS, max_len=20, k=6)
    options.update(kwargs)
    with pytest.raises(ValueError, match=message):
        LinformerAttention(**options)


@pytest.mark.parametrize(
    "x,lengths,message",
    [
        (torch.randn(2, 5, D_MODEL + 1), None, r"x must be \(B, T, 16\)"),
        (torch.randn(5, D_MODEL), None, r"x must be \(B, T, 16\)"),
        (torch.randn(2, 5, D_MODEL), torch.tensor([5]), r"lengths must be \(2,\)"),
        (torch.randn(2, 5, D_MODEL), torch.tensor([5, 9]), r"values in \[0, 5\]"),
        (torch.randn(2, 5, D_MODEL), torch.tensor([1.0, 0.6]), "absolute frame counts"),
    ],
)
def test_bad_inputs_raise_clear_errors(x, lengths, message):
    with pytest.raises(ValueError, match=message):
        make_attention()(x, lengths=lengths)
