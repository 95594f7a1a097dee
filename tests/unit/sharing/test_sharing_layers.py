"""nnet/sharing.py: residual shared weights, low-rank factors, adapters, LoRA."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from speechbrain_cald.nnet.sharing import (
    BottleneckAdapter,
    LoRALinear,
    LowRankDelta,
    ResidualSharedLinear,
    ResidualWeight,
    SharedWeight,
    low_rank_factors,
    residual_weight,
    wrapped_diagonal_index,
)
from float_tolerance import LAYER, REDUCTION, assert_close


@pytest.mark.parametrize("shape", [(5, 5), (12, 4), (4, 12), (6, 4), (4, 6)])
def test_wrapped_diagonal_positions_distinct_and_cover_rows_and_cols(shape):
    rows, cols = wrapped_diagonal_index(*shape)
    assert len(rows) == max(shape)
    assert len(set(zip(rows.tolist(), cols.tolist()))) == max(shape)
    assert set(rows.tolist()) == set(range(shape[0]))
    assert set(cols.tolist()) == set(range(shape[1]))


def test_residual_weight_matches_dense_reference():
    torch.manual_seed(0)
    S, A, B, d = torch.randn(6, 4), torch.randn(6, 2), torch.randn(2, 4), torch.randn(6)
    D = torch.zeros(6, 4)
    for i in range(6):
        D[i, i % 4] = d[i]
    assert_close(residual_weight(S, A, B, d), S + A @ B + D, factor=REDUCTION)


def test_low_rank_factors_is_best_rank_r_approximation():
    torch.manual_seed(0)
    m = torch.randn(10, 7)
    s = torch.linalg.svdvals(m)
    for r in range(0, 8):
        A, B = low_rank_factors(m, r)
        err = torch.linalg.matrix_norm(m - A @ B)
        # Eckart-Young: the error of the best rank-r approximation
        assert_close(err, s[r:].norm(), factor=LAYER, scale=torch.linalg.matrix_norm(m))


def test_low_rank_factors_of_zero_can_learn():
    A, B = low_rank_factors(torch.zeros(4, 3), 2)
    assert torch.equal(A @ B, torch.zeros(4, 3))
    assert B.abs().sum() > 0  # the zero A gets a gradient through a non-zero B


@pytest.mark.parametrize("shape", [(8, 8), (16, 8), (8, 16)])
def test_residual_parametrization_error_shrinks_with_rank_and_is_exact_at_full_rank(shape):
    torch.manual_seed(0)
    weights = [torch.randn(*shape) for _ in range(3)]
    shared = SharedWeight(torch.stack(weights).mean(0))
    errors = []
    for r in range(0, min(shape) + 1):
        err = 0.0
        for w in weights:
            lin = nn.Linear(shape[1], shape[0], bias=False)
            with torch.no_grad():
                lin.weight.copy_(w)
            parametrize.register_parametrization(lin, "weight", ResidualWeight(shared, r))
            err += (lin.weight - w).norm().item()
        errors.append(err)
    assert all(b < a for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-4


def test_residual_without_diagonal_has_no_d_and_larger_error():
    torch.manual_seed(0)
    w = torch.randn(6, 6)
    shared = SharedWeight(torch.zeros(6, 6))
    with_d = nn.Linear(6, 6)
    without = nn.Linear(6, 6)
    for lin, diag in ((with_d, True), (without, False)):
        with torch.no_grad():
            lin.weight.copy_(w)
        parametrize.register_parametrization(lin, "weight", ResidualWeight(shared, 2, diagonal=diag))
    assert without.parametrizations.weight.original2.numel() == 0
    assert (with_d.weight - w).norm() < (without.weight - w).norm()


def test_residual_shared_linear_from_linear_full_rank_equals_linear():
    torch.manual_seed(0)
    lin = nn.Linear(4, 6)
    shared = SharedWeight(torch.randn(6, 4))
    layer = ResidualSharedLinear.from_linear(lin, shared, rank=4)
    x = torch.randn(3, 4)
    assert_close(layer(x), lin(x), factor=LAYER)
    assert layer.shared.weight is shared.weight


def test_residual_weight_rejects_shape_mismatch():
    lin = nn.Linear(4, 6)
    with pytest.raises(ValueError, match=r"\(6, 4\).*\(4, 4\)"):
        square = ResidualWeight(SharedWeight(torch.zeros(4, 4)), 2)
        parametrize.register_parametrization(lin, "weight", square)


def test_bottleneck_adapter_formula():
    torch.manual_seed(0)
    ad = BottleneckAdapter(8, 3)
    nn.init.normal_(ad.up.weight)
    x = torch.randn(2, 5, 8)
    ref = nn.functional.layer_norm(
        x + ad.up(nn.functional.gelu(ad.down(x))), (8,), ad.norm.weight, ad.norm.bias
    )
    assert_close(ad(x), ref, factor=REDUCTION)


def test_lora_linear_equals_dense_weight_plus_delta():
    torch.manual_seed(0)
    base = nn.Linear(5, 3)
    lora = LoRALinear(base, rank=2, scale=0.5)
    nn.init.normal_(lora.delta.A)
    x = torch.randn(4, 5)
    ref = nn.functional.linear(x, base.weight + lora.delta(), base.bias)
    assert_close(lora(x), ref, factor=REDUCTION)


def test_low_rank_delta_from_matrix_full_rank_exact():
    m = torch.randn(5, 3)
    assert_close(LowRankDelta.from_matrix(m, 3, scale=2.0)(), m, factor=LAYER)


def test_residual_weight_never_writes_the_shared_matrix_and_gradients_reach_all_terms():
    S = torch.randn(4, 3, requires_grad=True)
    d = torch.randn(4, requires_grad=True)
    before = S.detach().clone()
    W = residual_weight(S, torch.zeros(4, 0), torch.zeros(0, 3), d)
    assert torch.equal(S.detach(), before)
    W.sum().backward()
    assert torch.equal(S.grad, torch.ones(4, 3)) and torch.equal(d.grad, torch.ones(4))
