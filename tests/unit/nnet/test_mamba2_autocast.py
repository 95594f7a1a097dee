"""Mamba2's recomputed-in-backward plain path under autocast (``--precision bf16`` training)."""

import torch

from speechbrain_cald.nnet import BiMamba2
from float_tolerance import ELEMENTWISE, assert_close


def test_backward_recomputes_under_the_forward_autocast_state():
    torch.manual_seed(0)
    layer = BiMamba2(32, d_state=16, headdim=16, chunk_size=8, checkpoint_scan=True, backend="torch")
    x = torch.randn(2, 20, 32, requires_grad=True)
    lengths = torch.tensor([20, 13])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x, lengths)
    y.float().square().mean().backward()  # failed with a float / bfloat16 matmul mismatch before
    grad_bf16 = x.grad.clone()
    x.grad = None
    layer(x, lengths).square().mean().backward()
    # bf16 has an 8-bit mantissa: the directions agree, the values to a few percent
    cos = torch.nn.functional.cosine_similarity(grad_bf16.flatten(), x.grad.flatten(), dim=0)
    assert torch.isfinite(grad_bf16).all() and cos > 0.98


def test_inference_under_autocast_matches_float32():
    torch.manual_seed(0)
    layer = BiMamba2(32, d_state=16, headdim=16, chunk_size=8, backend="torch").eval()
    x = torch.randn(2, 20, 32)
    with torch.no_grad():
        ref = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = layer(x)  # the no-grad path writes into float32 buffers: autocast must not reach it
    # the projections run in bfloat16 under autocast: a few bf16 roundings of the output's size
    assert_close(low.float(), ref, factor=ELEMENTWISE, dtype=torch.bfloat16)


def test_inference_under_autocast_takes_bf16_activations():
    # inside a model the mixer gets what an autocast layer before it made: bf16 activations
    # against its fp32 weights (a wav2vec2 student's inference in bf16 failed here: the
    # no-grad path's products write into bf16 buffers with out=, which autocast skips)
    torch.manual_seed(0)
    layer = BiMamba2(32, d_state=16, headdim=16, chunk_size=8, backend="torch").eval()
    x = torch.randn(2, 20, 32)
    lengths = torch.tensor([20, 13])
    with torch.no_grad():
        ref = layer(x, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = layer(x.bfloat16(), lengths)
            low_one = layer(x[:1].bfloat16())
    assert low.dtype == torch.bfloat16
    assert_close(low.float(), ref, factor=ELEMENTWISE, dtype=torch.bfloat16)
    assert_close(low_one.float(), ref[:1], factor=ELEMENTWISE, dtype=torch.bfloat16)
