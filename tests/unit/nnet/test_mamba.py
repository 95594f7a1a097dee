"""Mamba (v1): equivalence to a per-frame recurrence and to transformers'
MambaMixer, padding / state / causality behaviour, gradients, errors."""

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from speechbrain_cald.nnet.mamba import Mamba, MambaState
from speechbrain_cald.nnet.selective_scan import selective_scan
from float_tolerance import LAYER, NETWORK, REDUCTION, assert_close

D_MODEL, D_STATE = 12, 4


def make_mamba(dtype=torch.float32, **kwargs):
    torch.manual_seed(0)
    mixer = Mamba(D_MODEL, d_state=D_STATE, **kwargs).to(dtype)
    # random A / D / conv so the test does not rest on the special init values
    with torch.no_grad():
        mixer.A_log.uniform_(-1.0, 1.5)
        mixer.D.normal_()
        mixer.conv1d.bias.normal_()
    return mixer


def reference_mamba(mixer, x, h=None, history=None):
    """Per-frame Mamba recurrence as written in the paper (float64 in tests)."""
    b, T, _ = x.shape
    xi, z = mixer.in_proj(x).chunk(2, -1)
    weight = mixer.conv1d.weight[:, 0, :]  # (d_inner, K)
    K = weight.shape[1]
    if history is None:
        history = x.new_zeros(b, K - 1, mixer.d_inner)
    xpad = torch.cat([history, xi], 1)
    A = -torch.exp(mixer.A_log)
    if h is None:
        h = x.new_zeros(b, mixer.d_inner, mixer.d_state)
    ys = []
    for t in range(T):
        xc = F.silu((xpad[:, t : t + K] * weight.T).sum(1) + mixer.conv1d.bias)
        dt_low, B, C = torch.split(
            mixer.x_proj(xc), [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1
        )
        dt = F.softplus(mixer.dt_proj(dt_low))
        h = torch.exp(dt[..., None] * A) * h + (dt * xc)[..., None] * B[:, None, :]
        y = (h * C[:, None, :]).sum(-1) + mixer.D * xc
        ys.append(y * F.silu(z[:, t]))
    return mixer.out_proj(torch.stack(ys, 1)), h


@pytest.mark.parametrize("chunk_size,block_size", [(8, 64), (5, 12), (3, 7), (1, 1)])
def test_matches_per_frame_recurrence_float64(chunk_size, block_size):
    mixer = make_mamba(torch.float64, chunk_size=chunk_size, block_size=block_size)
    x = torch.randn(2, 29, D_MODEL, dtype=torch.float64)  # 29: no chunk or block divides it
    with torch.no_grad():
        y, state = mixer(x, return_state=True)
        y_ref, h_ref = reference_mamba(mixer, x)
    # chunked scan vs per-frame recurrence: the same sums, grouped differently
    assert_close(y, y_ref, factor=NETWORK)
    assert_close(state.ssm, h_ref, factor=NETWORK)


def test_gradients_match_recurrence_and_are_finite():
    mixer = make_mamba(torch.float64, chunk_size=3, block_size=6)
    x = torch.randn(2, 11, D_MODEL, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 11, D_MODEL, dtype=torch.float64)
    (mixer(x) * weights).sum().backward()
    ours = {n: p.grad.clone() for n, p in mixer.named_parameters()}
    ours["x"] = x.grad.clone()
    mixer.zero_grad()
    x.grad = None
    (reference_mamba(mixer, x)[0] * weights).sum().backward()
    theirs = {n: p.grad for n, p in mixer.named_parameters()}
    theirs["x"] = x.grad
    for name, grad in ours.items():
        assert torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, f"no gradient reached {name}"
        assert_close(grad, theirs[name], factor=NETWORK, msg=name)  # backward of chunked vs per-frame


def test_selective_scan_carries_initial_state():
    torch.manual_seed(1)
    b, T, d, n = 2, 13, 3, 4
    x, dt = torch.randn(b, T, d, dtype=torch.float64), torch.rand(b, T, d, dtype=torch.float64)
    A, h = -torch.rand(d, n, dtype=torch.float64) * 3, torch.randn(b, d, n, dtype=torch.float64)
    B, C = torch.randn(b, T, n, dtype=torch.float64), torch.randn(b, T, n, dtype=torch.float64)
    y, last = selective_scan(x, dt, A, B, C, initial_state=h, chunk_size=4, block_size=8)
    for t in range(T):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[..., None] * B[:, t, None]
        assert_close(y[:, t], (h * C[:, t, None]).sum(-1), factor=LAYER, scale=h.abs().max() * C.abs().max())
    assert_close(last, h, factor=LAYER)


def _transformers_mixer():
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer

    config = MambaConfig(
        hidden_size=D_MODEL,
        state_size=D_STATE,
        expand=2,
        conv_kernel=4,
        num_hidden_layers=1,
        time_step_rank=math.ceil(D_MODEL / 16),
        use_bias=False,
        use_conv_bias=True,
        hidden_act="silu",
    )
    torch.manual_seed(3)
    return MambaMixer(config, layer_idx=0).eval()


def test_state_dict_loads_strictly_both_ways_and_outputs_match_transformers():
    theirs = _transformers_mixer()
    ours = Mamba(D_MODEL, d_state=D_STATE)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(3, 45, D_MODEL)
    with torch.no_grad():  # two implementations of the layer
        assert_close(ours(x), theirs(x), factor=NETWORK)
    # and ours -> theirs
    fresh = make_mamba()
    theirs.load_state_dict(fresh.state_dict(), strict=True)
    with torch.no_grad():
        assert_close(fresh(x), theirs(x), factor=NETWORK)


def test_init_follows_mamba_ssm():
    mixer = Mamba(32, d_state=8, expand=2, dt_min=0.01, dt_max=0.05)
    assert mixer.dt_rank == 2 and mixer.d_inner == 64
    assert torch.equal(mixer.A_log, torch.log(torch.arange(1.0, 9.0)).repeat(64, 1))
    assert torch.equal(mixer.D, torch.ones(64))
    dt = F.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 0.01 - 1e-6 and dt.max() <= 0.05 + 1e-6
    assert mixer.dt_proj.weight.abs().max() <= 2**-0.5
    assert mixer.in_proj.bias is None and mixer.conv1d.bias is not None
    assert mixer.A_log.dtype == torch.float32
    constant = Mamba(32, dt_init="constant", dt_scale=2.0)
    expected = torch.full_like(constant.dt_proj.weight, 2.0 / math.sqrt(2))  # dt_rank 2
    assert_close(constant.dt_proj.weight, expected, factor=REDUCTION)  # uniform_(-c, c) with c = expected


@pytest.mark.parametrize("splits", [[2, 9], [1, 2, 2, 3, 8], [16]])
def test_chunked_processing_with_carried_state_equals_one_pass(splits):
    mixer = make_mamba(chunk_size=4, block_size=8)
    x = torch.randn(2, 23, D_MODEL)
    with torch.no_grad():
        y_full, state_full = mixer(x, return_state=True)
        pieces, state, start = [], None, 0
        for end in [*splits, x.shape[1]]:
            y, state = mixer(x[:, start:end], state=state, return_state=True)
            pieces.append(y)
            start = end
    # pieces vs one pass: other shapes (BLAS kernels) and chunk boundaries
    assert_close(torch.cat(pieces, 1), y_full, factor=LAYER)
    assert_close(state.ssm, state_full.ssm, factor=LAYER)
    assert_close(state.conv, state_full.conv, factor=REDUCTION)  # in_proj outputs, another batch shape


def test_padding_invariance_and_state_after_last_valid_frame():
    mixer = make_mamba(chunk_size=4, block_size=8)
    lengths = torch.tensor([17, 2, 9])
    x = torch.randn(3, 17, D_MODEL)
    with torch.no_grad():
        y, state = mixer(x, lengths=lengths, return_state=True)
        garbage = x.clone()
        for i, n in enumerate(lengths):
            garbage[i, n:] = 100 * torch.randn_like(garbage[i, n:])
        y_garbage = mixer(garbage, lengths=lengths)
        for i, n in enumerate(lengths.tolist()):
            y_alone, state_alone = mixer(x[i : i + 1, :n], return_state=True)
            # batched vs alone: other shapes, so other BLAS kernels and summation orders
            assert_close(y[i, :n], y_alone[0], factor=LAYER)
            assert torch.equal(y[i, n:], torch.zeros_like(y[i, n:]))
            assert_close(state.ssm[i], state_alone.ssm[0], factor=LAYER)
            # in_proj outputs of the last frames; the default allclose failed on AMD EPYC (1.2e-7 apart)
            assert_close(state.conv[i], state_alone.conv[0], factor=REDUCTION)
    assert torch.equal(y, y_garbage)


def test_padded_chunks_with_state_equal_unpadded_stream():
    """Streaming a padded batch piece by piece: each stream continues from its own valid end."""
    mixer = make_mamba(chunk_size=4, block_size=8)
    a, b = torch.randn(10, D_MODEL), torch.randn(6, D_MODEL)
    c, d = torch.randn(5, D_MODEL), torch.randn(7, D_MODEL)
    first = torch.stack([a, torch.cat([b, torch.zeros(4, D_MODEL)])])
    second = torch.stack([torch.cat([c, torch.zeros(2, D_MODEL)]), d])
    with torch.no_grad():
        _, state = mixer(first, lengths=torch.tensor([10, 6]), state=None, return_state=True)
        y = mixer(second, lengths=torch.tensor([5, 7]), state=state)
        ref_a = mixer(torch.cat([a, c])[None])[0, 10:]
        ref_b = mixer(torch.cat([b, d])[None])[0, 6:]
    assert_close(y[0, :5], ref_a, factor=LAYER)
    assert_close(y[1], ref_b, factor=LAYER)


def test_causal():
    mixer = make_mamba()
    x = torch.randn(2, 20, D_MODEL)
    changed = x.clone()
    changed[:, 12:] = torch.randn(2, 8, D_MODEL)
    with torch.no_grad():
        y, y_changed = mixer(x), mixer(changed)
    assert torch.equal(y[:, :12], y_changed[:, :12])
    assert not torch.allclose(y[:, 12:], y_changed[:, 12:])


def test_large_step_sizes_stay_exact_and_finite():
    """Decays far below exp(-60) are clamped for speed; the result must not move."""
    mixer = make_mamba(torch.float64, chunk_size=4, block_size=8)
    with torch.no_grad():
        mixer.dt_proj.bias.fill_(8.0)  # dt ~ 8: per-frame decays down to exp(-8 * 30)
        mixer.A_log.fill_(math.log(30.0))
    x = torch.randn(2, 19, D_MODEL, dtype=torch.float64, requires_grad=True)
    y = mixer(x)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    with torch.no_grad():
        assert_close(y, reference_mamba(mixer, x)[0], factor=NETWORK)


def test_half_precision_parameters_run():
    mixer = make_mamba().to(torch.bfloat16)
    y = mixer(torch.randn(2, 9, D_MODEL, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def _fake_selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                            delta_softplus=False, return_last_state=False):
    """mamba_ssm's selective_scan_fn contract, on CPU: u, delta (B, D, L); B, C (B, N, L)."""
    batch, dim, length = u.shape
    assert delta.shape == u.shape and A.shape[0] == dim and A.dtype == torch.float32
    assert B.shape == C.shape == (batch, A.shape[1], length)
    assert delta.dtype == B.dtype == C.dtype == u.dtype and u.is_contiguous()
    delta = delta.float() + (0 if delta_bias is None else delta_bias[:, None])
    delta = F.softplus(delta) if delta_softplus else delta
    state = u.new_zeros(batch, dim, A.shape[1], dtype=torch.float32)
    ys = []
    for i in range(length):
        inputs = (delta[:, :, i] * u[:, :, i])[..., None] * B[:, None, :, i]
        state = torch.exp(delta[:, :, i, None] * A) * state + inputs
        ys.append((state * C[:, None, :, i]).sum(-1))
    out = torch.stack(ys, -1) + (0 if D is None else u * D[:, None])
    out = out if z is None else out * F.silu(z)
    return (out.to(u.dtype), state) if return_last_state else out.to(u.dtype)


def _fake_causal_conv1d_fn(x, weight, bias=None, activation=None):
    """causal_conv1d's contract: x (B, D, L), weight (D, W)."""
    assert x.dim() == 3 and weight.shape == (x.shape[1], weight.shape[1])
    out = F.conv1d(F.pad(x, (weight.shape[1] - 1, 0)), weight[:, None], bias, groups=x.shape[1])
    return F.silu(out) if activation == "silu" else out


def test_mamba_ssm_backend_glue_matches_torch_backend(monkeypatch):
    """The CUDA path's argument layout, checked on CPU against fakes with the kernels' contracts."""
    from speechbrain_cald.nnet import mamba as mamba_module

    monkeypatch.setattr(
        mamba_module,
        "_KERNELS",
        {"scan": _fake_selective_scan_fn, "conv": _fake_causal_conv1d_fn, "available": True},
    )
    mixer = make_mamba(chunk_size=4, block_size=8)
    x = torch.randn(3, 14, D_MODEL)
    lengths = torch.tensor([14, 5, 9])
    with torch.no_grad():
        y_torch, state_torch = mixer(x, lengths=lengths, return_state=True)
        monkeypatch.setattr(Mamba, "_resolve_backend", lambda self, x: "mamba_ssm")
        y_kernel, state_kernel = mixer(x, lengths=lengths, return_state=True)
        # with a carried state the kernel (zero initial state only) hands over to torch
        y_next = mixer(x, lengths=lengths, state=state_kernel)
    # the fake kernel's per-frame scan vs our chunked one
    assert_close(y_kernel, y_torch, factor=LAYER)
    assert_close(state_kernel.ssm, state_torch.ssm, factor=LAYER)
    assert torch.equal(state_kernel.conv, state_torch.conv)
    monkeypatch.setattr(Mamba, "_resolve_backend", lambda self, x: "torch")
    with torch.no_grad():
        assert_close(y_next, mixer(x, lengths=lengths, state=state_torch), factor=LAYER)


def test_no_mamba_ssm_import_on_cpu():
    mixer = Mamba(D_MODEL, d_state=D_STATE, backend="auto")
    mixer(torch.randn(1, 5, D_MODEL))
    assert "mamba_ssm" not in sys.modules or torch.cuda.is_available()


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda m: m(torch.randn(2, 5, D_MODEL + 1)), "x must be"),
        (lambda m: m(torch.randn(5, D_MODEL)), "x must be"),
        (lambda m: m(torch.randn(2, 5, D_MODEL), lengths=torch.tensor([5])), "lengths must be"),
        (lambda m: m(torch.randn(2, 5, D_MODEL), lengths=torch.tensor([5, 6])), r"\[0, 5\]"),
        (lambda m: m(torch.randn(2, 5, D_MODEL), lengths=torch.tensor([1.0, 0.5])), "absolute frame counts"),
        (
            lambda m: m(
                torch.randn(2, 5, D_MODEL),
                state=MambaState(torch.zeros(2, m.d_inner, 3), torch.zeros(2, m.d_inner, D_STATE)),
            ),
            "state.conv",
        ),
        (
            lambda m: m(
                torch.randn(2, 5, D_MODEL),
                state=MambaState(torch.zeros(2, m.d_inner, 4), torch.zeros(1, m.d_inner, D_STATE)),
            ),
            "state.ssm",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(make_mamba())


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        Mamba(D_MODEL, backend="cuda")
    with pytest.raises(ValueError, match="unknown dt_init"):
        Mamba(D_MODEL, dt_init="normal")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA input"):
            Mamba(D_MODEL, backend="mamba_ssm")(torch.randn(1, 3, D_MODEL))
