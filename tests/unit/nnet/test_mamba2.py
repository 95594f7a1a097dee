"""Mamba2: the chunked SSD against independent references, padding, state, errors."""

import importlib.util

import pytest
import torch
from float_tolerance import ELEMENTWISE, LAYER, REDUCTION, assert_close

from speechbrain_cald.nnet.mamba2 import Mamba2, Mamba2State
from speechbrain_cald.nnet.ssd import ssd_chunked

HAS_MAMBA_SSM = importlib.util.find_spec("mamba_ssm") is not None


def naive_ssd(x, dt, A, B, C, D, state):
    """Step-by-step recurrence: s = exp(dt A) s + dt x B^T ; y = s C + D x."""
    heads_per_group = x.shape[2] // B.shape[2]
    B = B.repeat_interleave(heads_per_group, dim=2)
    C = C.repeat_interleave(heads_per_group, dim=2)
    D = D if D.dim() == 2 else D[:, None]
    ys = []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t] * A)[..., None, None]
        state = decay * state + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]) + D * x[:, t])
    return torch.stack(ys, dim=1), state


def small_mixer(**kwargs):
    options = dict(d_state=8, d_conv=4, expand=2, headdim=4, chunk_size=4)
    options.update(kwargs)
    return Mamba2(16, **options)


def hf_mixer(ngroups=1, chunk_size=16):
    from transformers import Mamba2Config
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    config = Mamba2Config(
        hidden_size=16, num_heads=8, head_dim=4, expand=2, state_size=8,
        n_groups=ngroups, chunk_size=chunk_size, conv_kernel=4, num_hidden_layers=1,
        layer_norm_epsilon=1e-5,
    )
    return Mamba2Mixer(config, layer_idx=0).eval()


def perturb_(module, scale=0.2):
    """Move every parameter off its default init (ones, zeros) so all of them matter."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 16, 64])
@pytest.mark.parametrize("ngroups,d_per_channel", [(1, False), (2, False), (2, True)])
def test_ssd_matches_naive_recurrence_fp64(chunk_size, ngroups, d_per_channel):
    dd = dict(dtype=torch.float64)
    b, T, H, P, N = 2, 23, 4, 3, 5
    x = torch.randn(b, T, H, P, **dd)
    dt = torch.rand(b, T, H, **dd) * 2
    dt[0, 5:9] = 0.0  # steps that leave the state alone, as padding does
    A = -torch.rand(H, **dd) * 4
    B, C = torch.randn(b, T, ngroups, N, **dd), torch.randn(b, T, ngroups, N, **dd)
    D = torch.randn(H, P, **dd) if d_per_channel else torch.randn(H, **dd)
    s0 = torch.randn(b, H, P, N, **dd)
    y, s = ssd_chunked(x, dt, A, B, C, chunk_size, D=D, initial_state=s0)
    y_ref, s_ref = naive_ssd(x, dt, A, B, C, D, s0)
    assert (y - y_ref).abs().max() < 1e-8
    assert (s - s_ref).abs().max() < 1e-8


def test_ssd_strong_decay_stays_finite():
    # exponents far below -80 must not turn into inf/NaN or differ from the recurrence
    dd = dict(dtype=torch.float64)
    x, dt = torch.randn(1, 40, 2, 3, **dd), torch.full((1, 40, 2), 5.0, **dd)
    A = torch.tensor([-30.0, -0.01], **dd)
    B, C = torch.randn(1, 40, 1, 4, **dd), torch.randn(1, 40, 1, 4, **dd)
    D, s0 = torch.zeros(2, **dd), torch.zeros(1, 2, 3, 4, **dd)
    y, s = ssd_chunked(x, dt, A, B, C, 16, D=D, initial_state=s0)
    y_ref, s_ref = naive_ssd(x, dt, A, B, C, D, s0)
    assert torch.isfinite(y).all()
    assert (y - y_ref).abs().max() < 1e-8 and (s - s_ref).abs().max() < 1e-8


@pytest.mark.parametrize("ngroups", [1, 2])
@pytest.mark.parametrize("T", [1, 13, 40])
def test_matches_transformers_mamba2mixer(ngroups, T):
    hf = perturb_(hf_mixer(ngroups=ngroups, chunk_size=16))
    ours = small_mixer(ngroups=ngroups, chunk_size=6).eval()  # a different chunking on purpose
    ours.load_state_dict(hf.state_dict(), strict=True)
    x = torch.randn(3, T, 16)
    with torch.no_grad():
        y_ref = hf(x)
        y = ours(x)
    assert y_ref.abs().max() > 0.1  # the comparison is not between two near-zero tensors
    assert (y - y_ref).abs().max() < 1e-4


def test_state_dict_strict_both_ways_with_transformers():
    hf, ours = hf_mixer(), small_mixer()
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(hf) == shapes(ours)
    ours.load_state_dict(perturb_(hf_mixer()).state_dict(), strict=True)
    hf.load_state_dict(ours.state_dict(), strict=True)
    for key, value in ours.state_dict().items():
        assert torch.equal(hf.state_dict()[key], value), key


def test_parameter_layout_is_mamba_ssm_s():
    m = Mamba2(32, d_state=16, d_conv=4, expand=2, headdim=8, ngroups=2)
    d_inner, nheads, conv_dim = 64, 8, 64 + 2 * 2 * 16
    expected = {
        "in_proj.weight": (2 * d_inner + 2 * 2 * 16 + nheads, 32),
        "conv1d.weight": (conv_dim, 1, 4),
        "conv1d.bias": (conv_dim,),
        "dt_bias": (nheads,),
        "A_log": (nheads,),
        "D": (nheads,),
        "norm.weight": (d_inner,),
        "out_proj.weight": (32, d_inner),
    }
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expected
    dt = torch.nn.functional.softplus(m.dt_bias)
    assert ((dt >= 1e-3 - 1e-6) & (dt <= 0.1 + 1e-6)).all()
    A = torch.exp(m.A_log)
    assert ((A >= 1) & (A <= 16)).all()


@pytest.mark.parametrize("splits", [[5, 11, 17], [1, 2, 3, 4], [9]])
@pytest.mark.parametrize("block_size", [4, 2048])
def test_pieces_with_carried_state_equal_one_pass(splits, block_size):
    m = perturb_(small_mixer(chunk_size=4, block_size=block_size)).double()
    x = torch.randn(2, 21, 16, dtype=torch.float64)
    y_full, state_full = m(x, return_state=True)
    state, pieces, start = None, [], 0
    for stop in splits + [x.shape[1]]:
        y, state = m(x[:, start:stop], state=state, return_state=True)
        pieces.append(y)
        start = stop
    assert (torch.cat(pieces, dim=1) - y_full).abs().max() < 1e-10
    assert (state.conv - state_full.conv).abs().max() < 1e-12
    assert (state.ssm - state_full.ssm).abs().max() < 1e-10


def test_block_size_and_chunk_size_do_not_change_output():
    m = perturb_(small_mixer(chunk_size=4, block_size=8)).double()
    x = torch.randn(2, 30, 16, dtype=torch.float64)
    y = m(x)
    for chunk, block in [(3, 3), (5, 1000), (64, 64)]:
        m.chunk_size, m.block_size = chunk, block
        assert (m(x) - y).abs().max() < 1e-10


@pytest.mark.parametrize("block_size", [4, 2048])
def test_padding_invariance_and_zero_padded_frames(block_size):
    m = perturb_(small_mixer(chunk_size=4, block_size=block_size)).double()
    lengths = torch.tensor([17, 9, 1, 0])
    x = torch.randn(4, 17, 16, dtype=torch.float64)
    x[1, 9:] = 1e6  # garbage in the padding must not matter
    y, state = m(x, lengths, return_state=True)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(y[b, n:], torch.zeros_like(y[b, n:]))
        if n == 0:
            assert torch.equal(state.ssm[b], torch.zeros_like(state.ssm[b]))
            continue
        y_alone, s_alone = m(x[b : b + 1, :n], return_state=True)
        assert (y[b, :n] - y_alone[0]).abs().max() < 1e-10
        assert (state.ssm[b] - s_alone.ssm[0]).abs().max() < 1e-10
        assert (state.conv[b] - s_alone.conv[0]).abs().max() < 1e-12


def test_padded_state_continues_like_unpadded():
    m = perturb_(small_mixer()).double()
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    more = torch.randn(2, 6, 16, dtype=torch.float64)
    _, state = m(x, torch.tensor([12, 7]), return_state=True)
    y_next = m(more, state=state)
    y_ref = m(torch.cat([x[1:, :7], more[1:]], dim=1))[:, 7:]
    assert (y_next[1] - y_ref[0]).abs().max() < 1e-10


def test_causal():
    m = perturb_(small_mixer()).double()
    x = torch.randn(2, 20, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 11:] += torch.randn_like(x2[:, 11:])
    y, y2 = m(x), m(x2)
    assert torch.equal(y[:, :11], y2[:, :11])
    assert (y[:, 11:] - y2[:, 11:]).abs().max() > 1e-3


def test_gradients_finite_and_padding_gets_none():
    m = perturb_(small_mixer())
    x = torch.randn(2, 15, 16, requires_grad=True)
    y = m(x, torch.tensor([15, 8]))
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[1, 8:], torch.zeros_like(x.grad[1, 8:]))
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gradient_matches_finite_differences():
    m = perturb_(Mamba2(8, d_state=4, expand=1, headdim=4, chunk_size=3)).double()
    x = torch.randn(1, 7, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: m(v, torch.tensor([6])), (x,), eps=1e-6, atol=1e-6)


def test_options_rmsnorm_off_norm_before_gate_bias_dt_limit():
    for kwargs in [dict(rmsnorm=False), dict(norm_before_gate=True), dict(bias=True, conv_bias=False),
                   dict(dt_limit=(0.01, 0.05)), dict(D_has_hdim=True)]:
        m = perturb_(small_mixer(**kwargs)).double()
        x = torch.randn(2, 10, 16, dtype=torch.float64)
        y1, s = m(x[:, :6], return_state=True)
        y2 = m(x[:, 6:], state=s)
        assert (torch.cat([y1, y2], 1) - m(x)).abs().max() < 1e-10, kwargs
        assert "norm.weight" not in m.state_dict() or kwargs.get("rmsnorm", True)


def test_auto_backend_on_cpu_is_torch():
    m = small_mixer(backend="auto")
    assert m._resolve_backend(torch.zeros(1, 2, 16)) == "torch"


def test_auto_backend_says_once_which_path_it_takes(caplog):
    from speechbrain_cald.nnet import mamba2

    mamba2._log_auto_backend.cache_clear()
    m = small_mixer(backend="auto")
    with caplog.at_level("INFO", logger="speechbrain_cald.nnet.mamba2"):
        m(torch.randn(1, 5, 16))
        m(torch.randn(1, 7, 16))
    lines = [r.getMessage() for r in caplog.records if "backend auto" in r.getMessage()]
    assert lines == ["Mamba2 backend auto: cpu inputs -> plain PyTorch"]
    small_mixer(backend="torch")(torch.randn(1, 5, 16))  # a fixed backend says nothing
    assert len([r for r in caplog.records if "backend auto" in r.getMessage()]) == 1


@pytest.mark.skipif(HAS_MAMBA_SSM, reason="mamba_ssm is installed here")
def test_mamba_ssm_backend_without_package_is_a_clear_error():
    m = small_mixer(backend="mamba_ssm")
    with pytest.raises(RuntimeError, match="mamba_ssm.*could not be imported"):
        m(torch.randn(1, 5, 16))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m(torch.randn(2, 5, 15)), r"x must be \(B, T, d_model=16\)"),
        (lambda m: m(torch.randn(5, 16)), r"x must be \(B, T, d_model=16\)"),
        (lambda m: m(torch.randn(2, 5, 16), torch.tensor([0.5, 1.0])), "integer frame counts"),
        (lambda m: m(torch.randn(2, 5, 16), torch.tensor([5])), "integer frame counts"),
        (lambda m: m(torch.randn(2, 5, 16), torch.tensor([6, 5])), r"lengths must lie in \[0, T=5\]"),
        (lambda m: m(torch.randn(2, 5, 16), state=Mamba2State(torch.zeros(2, 3, 4), torch.zeros(2, 8, 4, 8))),
         r"state.conv must be \(2, 48, 4\)"),
    ],
)
def test_bad_inputs_give_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(small_mixer())


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="not a multiple of headdim"):
        Mamba2(10, expand=1, headdim=4)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        Mamba2(16, headdim=4, backend="cuda")
    with pytest.raises(NotImplementedError, match="d_ssm"):
        Mamba2(16, headdim=4, d_ssm=16)


def test_ssd_gradients_match_finite_differences():
    # covers the hand-written backward of the state carried across chunks
    dd = dict(dtype=torch.float64, requires_grad=True)
    b, T, H, P, N = 1, 9, 2, 2, 3
    args = (
        torch.randn(b, T, H, P, **dd), torch.rand(b, T, H, **dd), -torch.rand(H, **dd),
        torch.randn(b, T, 1, N, **dd), torch.randn(b, T, 1, N, **dd),
    )
    D, s0 = torch.randn(H, **dd), torch.randn(b, H, P, N, **dd)

    def fn(x, dt, A, B, C, D, s0):
        y, s = ssd_chunked(x, dt, A, B, C, 2, D=D, initial_state=s0)
        return y, s

    assert torch.autograd.gradcheck(fn, (*args, D, s0), eps=1e-6, atol=1e-6)


def test_checkpointed_blocks_give_the_same_gradients():
    m = perturb_(small_mixer(chunk_size=4, block_size=8)).double()
    x = torch.randn(2, 21, 16, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([21, 13])
    grads = []
    for flag in (False, True):
        m.checkpoint_blocks = flag
        m.zero_grad()
        x.grad = None
        m(x, lengths).square().sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in m.parameters()])
    for g0, g1 in zip(*grads):
        assert (g0 - g1).abs().max() < 1e-10


@pytest.mark.parametrize("chunk_size", [3, 8])
def test_ssd_autograd_path_equals_in_place_path(chunk_size):
    # without autograd the scan carries states in place in one shared buffer
    # (b > 1, several chunks, an initial state); with autograd by a decay matrix
    dd = dict(dtype=torch.float64)
    b, T, H, P, N = 3, 26, 4, 3, 5
    args = (
        torch.randn(b, T, H, P, **dd), torch.rand(b, T, H, **dd), -torch.rand(H, **dd) * 3,
        torch.randn(b, T, 2, N, **dd), torch.randn(b, T, 2, N, **dd),
    )
    D, s0 = torch.randn(H, **dd), torch.randn(b, H, P, N, **dd)
    with torch.no_grad():
        y0, s_0 = ssd_chunked(*args, chunk_size, D=D, initial_state=s0)
    x = args[0].clone().requires_grad_(True)
    y1, s_1 = ssd_chunked(x, *args[1:], chunk_size, D=D, initial_state=s0)
    assert (y0 - y1).abs().max() < 1e-12 and (s_0 - s_1).abs().max() < 1e-12
    y_ref, s_ref = naive_ssd(*args, D, s0)
    assert (y0 - y_ref).abs().max() < 1e-8 and (s_0 - s_ref).abs().max() < 1e-8


@pytest.mark.parametrize("d_per_channel", [False, True])
def test_ssd_per_sequence_parameters_equal_separate_calls(d_per_channel):
    # A and D with a leading batch dim: what BiMamba2's fused directions use
    dd = dict(dtype=torch.float64)
    b, T, H, P, N = 4, 19, 2, 3, 5
    x, dt = torch.randn(b, T, H, P, **dd), torch.rand(b, T, H, **dd)
    B, C = torch.randn(b, T, 1, N, **dd), torch.randn(b, T, 1, N, **dd)
    A = -torch.rand(b, H, **dd) * 3
    D = torch.randn(b, H, P, **dd) if d_per_channel else torch.randn(b, H, **dd)
    s0 = torch.randn(b, H, P, N, **dd)
    y, s = ssd_chunked(x, dt, A, B, C, 4, D=D, initial_state=s0)
    for i in range(b):
        one = (x[i : i + 1], dt[i : i + 1], A[i], B[i : i + 1], C[i : i + 1])
        y_i, s_i = ssd_chunked(*one, 4, D=D[i], initial_state=s0[i : i + 1])
        assert (y[i] - y_i[0]).abs().max() < 1e-12 and (s[i] - s_i[0]).abs().max() < 1e-12
    with pytest.raises(ValueError, match=r"A must be \(2,\) or \(4, 2\)"):
        ssd_chunked(x, dt, A[:3], B, C, 4)


def _grads(module, x, lengths):
    module.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    y = module(x, lengths)
    y.square().sum().backward()
    return y.detach(), [x.grad] + [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_checkpoint_scan_gives_the_same_outputs_and_gradients(dtype, tol):
    m = perturb_(small_mixer(chunk_size=4, block_size=8)).to(dtype)
    x = torch.randn(2, 21, 16, dtype=dtype)
    lengths = torch.tensor([21, 13])
    m.checkpoint_scan = False
    y0, g0 = _grads(m, x, lengths)
    m.checkpoint_scan = True
    y1, g1 = _grads(m, x, lengths)
    assert (y0 - y1).abs().max() < tol
    for a, b in zip(g0, g1):
        assert (a - b).abs().max() <= tol * max(1.0, a.abs().max().item())


def test_checkpoint_scan_stores_far_less():
    m = small_mixer(d_state=16, chunk_size=8)
    x = torch.randn(1, 256, 16, requires_grad=True)
    stored = {}
    for flag in (False, True):
        m.checkpoint_scan = flag
        sizes = {}

        def pack(t, sizes=sizes):
            sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(x)
        stored[flag] = sum(sizes.values())
    assert stored[True] < 0.5 * stored[False]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("block_size", [4, 2048])
def test_stacked_forward_equals_separate_layers(dtype, tol, block_size):
    from speechbrain_cald.nnet.mamba2 import mamba2_stacked_forward

    layers = [perturb_(small_mixer(block_size=block_size, D_has_hdim=True)).to(dtype) for _ in range(2)]
    xs = torch.randn(2, 3, 11, 16, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([11, 6, 0])
    ys = mamba2_stacked_forward(layers, xs, lengths)
    (ys * torch.linspace(-1, 1, 16, dtype=dtype)).sum().backward()
    stacked_grads = [xs.grad.clone()] + [p.grad.clone() for m in layers for p in m.parameters()]
    for m in layers:
        m.zero_grad()
    xs.grad = None
    ref = torch.stack([m(xs[i], lengths) for i, m in enumerate(layers)])
    (ref * torch.linspace(-1, 1, 16, dtype=dtype)).sum().backward()
    ref_grads = [xs.grad] + [p.grad for m in layers for p in m.parameters()]
    assert (ys - ref).abs().max() < tol
    for a, b in zip(stacked_grads, ref_grads):
        assert (a - b).abs().max() <= tol * max(1.0, b.abs().max().item())


def test_stacked_forward_rejects_different_layers():
    from speechbrain_cald.nnet.mamba2 import mamba2_stacked_forward

    with pytest.raises(ValueError, match="layers differ in hyper-parameters"):
        mamba2_stacked_forward([small_mixer(), small_mixer(chunk_size=8)], torch.randn(2, 1, 5, 16))
    with pytest.raises(ValueError, match=r"xs must be \(2, B, T, D\)"):
        mamba2_stacked_forward([small_mixer(), small_mixer()], torch.randn(1, 5, 16))


def test_scan_results_survive_later_calls():
    """ssd_chunked's temporaries live in reused scratch buffers; returned tensors must not."""
    torch.manual_seed(0)
    shapes = [(1, 19, 4, 3), (1, 19, 4), (4,), (1, 19, 1, 5), (1, 19, 1, 5)]  # 19: two pieces
    make = lambda: [torch.randn(s) if i != 1 else torch.rand(s) for i, s in enumerate(shapes)]  # noqa: E731
    first = make()
    first[2] = -first[2].abs()
    with torch.no_grad():
        y1, s1 = ssd_chunked(*first, 8)
        kept = (y1.clone(), s1.clone())
        second = make()
        second[2] = -second[2].abs()
        ssd_chunked(*second, 8)
        m = small_mixer()
        out1 = m(torch.randn(2, 11, m.d_model))
        kept_out = out1.clone()
        m(torch.randn(2, 11, m.d_model))
    assert torch.equal(y1, kept[0]) and torch.equal(s1, kept[1])
    assert torch.equal(out1, kept_out)


def test_scratch_reuses_memory_only_below_its_cap():
    from speechbrain_cald.nnet import ssd

    like = torch.zeros(1)
    a = ssd.scratch("test.cap", (10,), like)
    assert ssd.scratch("test.cap", (5, 2), like).data_ptr() == a.data_ptr()
    assert ssd.scratch("test.cap", (10,), like.double()).data_ptr() != a.data_ptr()  # per dtype
    big = ssd._SCRATCH_MAX_BYTES // 4 + 1
    b1, b2 = ssd.scratch("test.big", (big,), like), ssd.scratch("test.big", (big,), like)
    assert b1.data_ptr() != b2.data_ptr()  # both alive: fresh memory each time


def test_release_scratch_frees_the_buffers_and_the_path_still_works():
    from speechbrain_cald.nnet import ssd

    m = small_mixer()
    x = torch.randn(1, 13, m.d_model)
    with torch.no_grad():
        y = m(x)
        assert ssd.release_scratch() > 0
        assert ssd.release_scratch() == 0
        assert torch.equal(m(x), y)


def test_bf16_module_follows_its_fp32_twin():
    """A module in bf16 keeps its scan in fp32 (as mamba_ssm): output and ``dt_bias``'s
    gradient close to its fp32 twin (same bf16-rounded weights and input). With the scan
    itself in bf16 (the chunk's cumulative ``dt * A``) the output here was 1.6% of its
    largest value off (bar: 0.8%), ``dt_bias``'s gradient 94% at T = 3,000 on an H100
    (docs/bench/mixers_cuda_bf16.md)."""
    torch.manual_seed(0)
    low = perturb_(Mamba2(64, d_state=16, expand=2, headdim=16, chunk_size=256), 0.05).to(torch.bfloat16)
    ref = Mamba2(64, d_state=16, expand=2, headdim=16, chunk_size=256)
    ref.load_state_dict({k: v.float() for k, v in low.state_dict().items()})
    x = torch.randn(2, 300, 64).to(torch.bfloat16)
    outputs = []
    for module, inp in ((low, x), (ref, x.float())):
        inp = inp.clone().requires_grad_(True)
        y = module(inp, torch.tensor([300, 211]))
        y.float().square().sum().backward()
        outputs.append((y.detach(), module.dt_bias.grad.float()))
    (y_low, g_low), (y_ref, g_ref) = outputs
    assert y_low.dtype == torch.bfloat16
    # bars in bf16's eps (2^-7) times the reference's largest value: 1 for the output, 2 for the gradient
    assert_close(y_low, y_ref, factor=1, scale=float(y_ref.abs().max()), dtype=torch.bfloat16)
    assert_close(g_low, g_ref, factor=2, scale=float(g_ref.abs().max()), dtype=torch.bfloat16)


@pytest.mark.parametrize("T", [3, 4, 9])
@pytest.mark.parametrize("grad", [False, True])
def test_ssd_without_final_state_gives_the_same_outputs(T, grad):
    # final_state=False skips the state (all of it for one chunk from a zero state)
    b, H, P, N = 2, 4, 3, 5
    x = torch.randn(b, T, H, P, requires_grad=grad)
    dt, A = torch.rand(b, T, H), -torch.rand(H) * 3
    B, C, D = torch.randn(b, T, 2, N), torch.randn(b, T, 2, N), torch.randn(H)
    y_ref, _ = naive_ssd(x.detach().double(), dt.double(), A.double(), B.double(), C.double(), D.double(),
                         torch.zeros(b, H, P, N, dtype=torch.float64))
    y, s = ssd_chunked(x, dt, A, B, C, 4, D=D, final_state=False)
    assert s is None and y.is_contiguous()
    # fp32 chunked scan vs the fp64 recurrence: a layer's worth of roundings
    assert_close(y, y_ref.float(), factor=LAYER)
    if grad:
        y.square().sum().backward()
        assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("T", [5, 16])
def test_short_sequences_under_autograd_equal_inference(T):
    # T <= chunk_size: one chunk, no state formed; the autograd and in-place paths agree
    m = perturb_(small_mixer(chunk_size=16))
    x = torch.randn(2, T, 16)
    lengths = torch.tensor([T, T - 2])
    with torch.no_grad():
        y0 = m(x, lengths)
    y1 = m(x.clone().requires_grad_(True), lengths)
    y1.square().sum().backward()
    # the same arithmetic, in place or not: elementwise roundings only
    assert_close(y1, y0, factor=ELEMENTWISE)
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_cached_parameters_follow_in_place_updates():
    # without autograd the padded / folded parameters are kept between calls
    m = perturb_(small_mixer())
    x = torch.randn(1, 9, 16)
    with torch.no_grad():
        m(x)
        m.out_proj.weight.mul_(2.0)
        m.norm.weight.add_(0.5)
        m.in_proj.weight.add_(0.1)
        y = m(x)
    fresh = small_mixer()
    fresh.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), y)


@pytest.mark.parametrize("T", [1, 2, 7])
@pytest.mark.parametrize("layers", [(), (2,)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_from_zero_context_backward_matches_autograd(T, layers, bias):
    # the hand-written backward of the zero-context conv against autograd's own
    # graph of the same products (the path taken with an explicit context)
    from speechbrain_cald.nnet.mamba2 import _causal_depthwise_conv

    dd = dict(dtype=torch.float64)
    x = torch.randn(*layers, 3, T, 5, **dd, requires_grad=True)
    w = torch.randn(*layers, 5, 4, **dd, requires_grad=True)
    b = torch.randn(*layers, 5, **dd, requires_grad=True) if bias else None
    inputs = [x, w] + ([b] if bias else [])
    y = _causal_depthwise_conv(None, x, w, b)
    y_ref = _causal_depthwise_conv(torch.zeros(*layers, 3, 4, 5, **dd), x, w, b)
    g = torch.randn_like(y)
    for got, want in zip(torch.autograd.grad(y, inputs, g), torch.autograd.grad(y_ref, inputs, g)):
        # the same sums in another order: one reduction's roundings
        assert_close(got, want, factor=REDUCTION)
    assert_close(y, y_ref, factor=REDUCTION)
    assert torch.autograd.gradcheck(lambda *t: _causal_depthwise_conv(None, t[0], t[1], t[2] if bias else None), tuple(inputs))


def test_cached_parameters_follow_replaced_data():
    # `param.data = ...` (no version bump) must not reuse the previous call's derived weights
    m = perturb_(small_mixer())
    x = torch.randn(1, 9, 16)
    with torch.no_grad():
        m(x)
        m.in_proj.weight.data = m.in_proj.weight.data * 1.5
        y = m(x)
    fresh = small_mixer()
    fresh.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), y)
