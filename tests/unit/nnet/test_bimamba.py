"""BiMamba2: reversal semantics against a per-sample loop, padding, residual, options."""

import importlib.util

import pytest
import torch

from speechbrain_cald.nnet.bimamba import BiMamba2, reverse_valid


def tiny(**kwargs):
    options = dict(d_state=8, expand=1, headdim=4, chunk_size=4)
    options.update(kwargs)
    bi = BiMamba2(16, **options).double()
    with torch.no_grad():  # make the two directions clearly different
        for p in bi.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return bi


def per_sample_reference(bi, x, lengths):
    """Each sequence alone: forward mixer + time-flipped backward mixer on its valid frames."""
    out = torch.zeros_like(x)
    for b, n in enumerate(lengths.tolist()):
        if n == 0:
            continue
        seq = x[b : b + 1, :n]
        y = bi.forward_mixer(seq) + bi.backward_mixer(seq.flip(1)).flip(1)
        out[b, :n] = y[0] + (seq[0] if bi.residual_inside else 0)
    return out


def test_reverse_valid_matches_loop_and_is_an_involution():
    x = torch.randn(3, 6, 2)
    lengths = torch.tensor([6, 4, 0])
    r = reverse_valid(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(r[b, :n], x[b, :n].flip(0))
        assert torch.equal(r[b, n:], x[b, n:])
    assert torch.equal(reverse_valid(r, lengths), x)
    assert torch.equal(reverse_valid(x, None), x.flip(1))


@pytest.mark.parametrize("residual_inside", [False, True])
def test_matches_per_sample_reference(residual_inside):
    bi = tiny(residual_inside=residual_inside)
    lengths = torch.tensor([13, 8, 1, 0])
    x = torch.randn(4, 13, 16, dtype=torch.float64)
    y = bi(x, lengths)
    y_ref = per_sample_reference(bi, x, lengths)
    assert (y - y_ref).abs().max() < 1e-10
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(y[b, n:], torch.zeros_like(y[b, n:]))


def test_backward_direction_sees_the_future():
    bi = tiny()
    x = torch.randn(1, 12, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 8:] += 1.0
    assert (bi(x)[:, :8] - bi(x2)[:, :8]).abs().max() > 1e-3  # not causal: both directions used


def test_unpadded_equals_flip():
    bi = tiny()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    y = bi(x)
    y_ref = bi.forward_mixer(x) + bi.backward_mixer(x.flip(1)).flip(1)
    assert (y - y_ref).abs().max() < 1e-12
    assert (bi(x, torch.tensor([9, 9])) - y).abs().max() < 1e-12


def test_gradients_reach_both_directions():
    bi = tiny().float()
    x = torch.randn(2, 10, 16, requires_grad=True)
    bi(x, torch.tensor([10, 6])).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[1, 6:], torch.zeros_like(x.grad[1, 6:]))
    for mixer in (bi.forward_mixer, bi.backward_mixer):
        assert mixer.in_proj.weight.grad.abs().sum() > 0


def test_errors():
    with pytest.raises(ValueError, match="unknown mixer 'lstm'"):
        BiMamba2(16, mixer="lstm")
    with pytest.raises(ValueError, match=r"x must be \(B, T, d_model=16\)"):
        tiny()(torch.randn(2, 5, 8, dtype=torch.float64))


@pytest.mark.skipif(
    importlib.util.find_spec("speechbrain_cald.nnet.mamba") is None,
    reason="Mamba v1 (speechbrain_cald/nnet/mamba.py) is not there yet",
)
def test_mamba_v1_directions():
    from speechbrain_cald.nnet.mamba import Mamba

    bi = BiMamba2(16, mixer="mamba", d_state=4, expand=1)
    assert isinstance(bi.forward_mixer, Mamba) and isinstance(bi.backward_mixer, Mamba)
    lengths = torch.tensor([7, 4])
    x = torch.randn(2, 7, 16)
    y = bi(x, lengths)
    y_ref = per_sample_reference(bi, x, lengths)
    assert (y - y_ref).abs().max() < 1e-5


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("residual_inside", [False, True])
def test_fused_directions_equal_separate_directions(dtype, tol, residual_inside):
    bi = tiny(residual_inside=residual_inside).to(dtype)
    lengths = torch.tensor([13, 8, 1, 0])
    x = torch.randn(4, 13, 16, dtype=dtype)
    outs = {}
    assert bi.fuse_directions is None and bi._fused(x)  # the default here: one batched pass
    for fused in (True, False):
        bi.fuse_directions = fused
        assert bi._fused(x) is fused
        bi.zero_grad()
        xg = x.clone().requires_grad_(True)
        y = bi(xg, lengths)
        (y * torch.linspace(-1, 1, 16, dtype=dtype)).sum().backward()
        outs[fused] = [y.detach(), xg.grad] + [p.grad.clone() for p in bi.parameters()]
    for a, b in zip(outs[True], outs[False]):
        assert (a - b).abs().max() <= tol * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("residual_inside", [False, True])
@pytest.mark.parametrize("block_size", [4, 8, 64])
def test_inference_path_equals_reference(residual_inside, block_size, fused):
    """Without autograd or lengths: one batched pass, or (unfused) the backward direction
    adding into the output block by block."""
    bi = tiny(residual_inside=residual_inside, block_size=block_size, fuse_directions=fused)
    x = torch.randn(2, 21, 16, dtype=torch.float64)  # 21: blocks and chunks do not divide it
    y_ref = per_sample_reference(bi, x, torch.tensor([21, 21]))
    with torch.no_grad():
        y = bi(x)
        y_again = bi(x)
    assert (y - y_ref).abs().max() < 1e-10
    assert torch.equal(y, y_again)


@pytest.mark.parametrize("fused", [True, False])
def test_inference_outputs_are_not_overwritten_by_the_next_call(fused):
    """The plain path reuses scratch memory between calls: results must stay the caller's."""
    bi = tiny(fuse_directions=fused).float()
    x1, x2 = torch.randn(1, 30, 16), torch.randn(1, 30, 16)
    with torch.no_grad():
        y1 = bi(x1)
        kept = y1.clone()
        bi(x2)
        bi.forward_mixer(x2)
    assert torch.equal(y1, kept)


def test_default_fuses_except_long_training():
    # None: fused, except under autograd on more than one block of frames
    bi = tiny(block_size=8).float()
    short, long = torch.randn(1, 8, 16), torch.randn(2, 8, 16)
    with torch.no_grad():
        assert bi._fused(short) and bi._fused(long)
    assert bi._fused(short) and not bi._fused(long)  # the parameters need gradients
    bi.fuse_directions = True
    assert bi._fused(long)
