"""Weight-sharing layers: residual shared weights, bottleneck adapters, low-rank deltas.

Family-agnostic building blocks of the parameter-sharing students
(``speechbrain_cald.convert.share``):

- :class:`SharedWeight`: one full-rank matrix ``S_g`` referenced by several
  layers (ResidualTransformer's group-shared weight, Wang & Li 2024).
- :class:`ResidualWeight`: a ``torch.nn.utils.parametrize`` parametrization
  ``W_l = S_g + A_l B_l + D_l`` that turns *any* 2-D weight of *any* module
  (``nn.Linear.weight``, ``nn.MultiheadAttention.in_proj_weight``, ...) into a
  residual shared weight, initialised from the weight it replaces.
- :class:`ResidualSharedLinear`: the same weight as a stand-alone linear layer.
- :class:`BottleneckAdapter`: ``LayerNorm(x + up(GELU(down(x))))`` (MiniALBERT).
- :class:`LowRankDelta` and :class:`LoRALinear`: per-step low-rank terms
  (Relaxed Recursive Transformers), initialised from a truncated SVD.

The diagonal term ``D_l`` of a non-square ``(out, in)`` weight lives on the
*wrapped diagonal*: the ``max(out, in)`` positions ``(i mod out, i mod in)``.
For a square matrix this is the ordinary diagonal; for a tall ``(k*in, in)``
or wide ``(out, k*out)`` matrix it is the diagonal of each square block, so
every row and every column gets one free scale (the paper defines ``D_l`` for
square weights only; this is our extension, see :func:`wrapped_diagonal_index`).

The shared matrix counts once: modules that reference one ``SharedWeight``
hold the same ``nn.Parameter`` object, which ``model.parameters()`` yields
once and ``torch.save`` stores once.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "wrapped_diagonal_index",
    "low_rank_factors",
    "residual_weight",
    "SharedWeight",
    "ResidualWeight",
    "ResidualSharedLinear",
    "BottleneckAdapter",
    "LowRankDelta",
    "LoRALinear",
]


def wrapped_diagonal_index(out_features: int, in_features: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the wrapped diagonal of an ``(out, in)`` matrix.

    Arguments
    ---------
    out_features : int
        Rows of the matrix.
    in_features : int
        Columns of the matrix.

    Returns
    -------
    rows, cols : torch.Tensor
        ``(max(out, in),)`` long tensors; position ``i`` is
        ``(i mod out, i mod in)``. The positions are distinct.

    Example
    -------
    >>> rows, cols = wrapped_diagonal_index(4, 2)
    >>> list(zip(rows.tolist(), cols.tolist()))
    [(0, 0), (1, 1), (2, 0), (3, 1)]
    """
    n = max(out_features, in_features)
    i = torch.arange(n)
    return i % out_features, i % in_features


def low_rank_factors(matrix: torch.Tensor, rank: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rank-``rank`` truncated SVD of ``matrix`` as ``A @ B`` (balanced factors).

    ``A = U_r sqrt(s_r)``, ``B = sqrt(s_r) V_r^T``, computed in float64. A
    component whose singular value is (numerically) zero gets a zero column in
    ``A`` and a small random row in ``B`` (LoRA-style): the product is
    unchanged but the pair can still learn (two zero factors never move).

    Arguments
    ---------
    matrix : torch.Tensor
        ``(out, in)``.
    rank : int
        Number of components kept; clamped to ``min(out, in)``.

    Returns
    -------
    A : torch.Tensor
        ``(out, r)`` in ``matrix``'s dtype.
    B : torch.Tensor
        ``(r, in)`` in ``matrix``'s dtype.

    Example
    -------
    >>> m = torch.randn(6, 4)
    >>> A, B = low_rank_factors(m, 4)
    >>> bool((A @ B - m).abs().max() <= 512 * torch.finfo(m.dtype).eps * m.abs().max())  # SVD rounding
    True
    >>> A, B = low_rank_factors(m, 2)
    >>> tuple(A.shape), tuple(B.shape)
    ((6, 2), (2, 4))
    """
    if matrix.dim() != 2:
        raise ValueError(f"low_rank_factors: expected a 2-D matrix, found shape {tuple(matrix.shape)}")
    out_f, in_f = matrix.shape
    r = max(0, min(int(rank), out_f, in_f))
    if r == 0:
        return matrix.new_zeros(out_f, 0), matrix.new_zeros(0, in_f)
    U, s, Vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    root = s[:r].sqrt()
    A = U[:, :r] * root
    B = root[:, None] * Vh[:r]
    # dead components: keep the product, make the pair trainable
    scale = s[0].item() if s.numel() else 0.0
    dead = s[:r] <= max(scale, 1.0) * 1e-7
    if dead.any():
        A[:, dead] = 0.0
        B[dead] = torch.randn(int(dead.sum()), in_f, dtype=B.dtype, device=B.device) / math.sqrt(in_f)
    return A.to(matrix.dtype), B.to(matrix.dtype)


def residual_weight(
    shared: torch.Tensor, A: torch.Tensor, B: torch.Tensor, d: torch.Tensor
) -> torch.Tensor:
    """``S + A @ B + D`` with ``D`` holding ``d`` on the wrapped diagonal.

    Arguments
    ---------
    shared : torch.Tensor
        ``S (out, in)``.
    A : torch.Tensor
        ``(out, r)``.
    B : torch.Tensor
        ``(r, in)``.
    d : torch.Tensor
        ``(max(out, in),)``, or ``(0,)`` for no diagonal term.

    Returns
    -------
    torch.Tensor
        ``W (out, in)``.

    Example
    -------
    >>> S = torch.zeros(2, 2)
    >>> residual_weight(S, torch.zeros(2, 0), torch.zeros(0, 2), torch.tensor([1., 2.]))
    tensor([[1., 0.],
            [0., 2.]])
    """
    W = shared
    if A.shape[1] > 0:
        W = W + A @ B
    if d.numel() > 0:
        rows, cols = _diagonal_index_on(*shared.shape, d.device)
        W = W.index_put((rows, cols), d, accumulate=True)  # out of place: S is never written
    return W


@functools.lru_cache(maxsize=256)
def _diagonal_index_on(out_features: int, in_features: int, device: torch.device):
    # cached: the weight is recomputed at every access during training
    rows, cols = wrapped_diagonal_index(out_features, in_features)
    return rows.to(device), cols.to(device)


def _residual_terms(
    W: torch.Tensor, S: torch.Tensor, rank: int, diagonal: bool
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A, B, d)`` of a weight: ``A B`` = rank-r SVD of ``W - S``, ``d`` = the diagonal of the rest."""
    residual = (W.detach().double() - S.detach().double())
    A, B = low_rank_factors(residual, rank)
    rows, cols = wrapped_diagonal_index(*W.shape)
    if diagonal:
        remain = residual - A @ B if A.shape[1] > 0 else residual
        d = remain[rows, cols]
    else:
        d = residual.new_zeros(0)
    return A.to(W.dtype), B.to(W.dtype), d.to(W.dtype)


class SharedWeight(nn.Module):
    """One full-rank matrix shared by a group of layers (``S_g``).

    Arguments
    ---------
    weight : torch.Tensor
        ``(out, in)`` initial value (copied).

    Example
    -------
    >>> S = SharedWeight(torch.ones(3, 2))
    >>> tuple(S.weight.shape)
    (3, 2)
    """

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())

    def extra_repr(self) -> str:
        return f"shape={tuple(self.weight.shape)}"


class ResidualWeight(nn.Module):
    """Parametrization ``W = S + A @ B + D`` for ``torch.nn.utils.parametrize``.

    Registering it on a module's 2-D weight replaces the stored weight by the
    per-layer terms ``A (out, r)``, ``B (r, in)``, ``d (max(out, in),)``
    (``parametrizations.<name>.original0/1/2``) initialised from the current
    weight: ``A B`` = rank-r truncated SVD of ``W - S``, ``d`` = the wrapped
    diagonal of what remains. At full rank the weight is reproduced exactly
    (up to float rounding).

    Arguments
    ---------
    shared : SharedWeight
        The group's shared matrix ``S``; referenced, not copied.
    rank : int
        Rank of the per-layer low-rank term (clamped to ``min(out, in)``).
    diagonal : bool
        Whether the per-layer diagonal term ``D`` exists.
    weight_shape : tuple of int, optional
        Shape of the reparameterised weight when it is not the matrix itself,
        e.g. ``(out, in, 1)`` for a pointwise ``nn.Conv1d`` (default ``(out, in)``).

    Example
    -------
    >>> from torch.nn.utils import parametrize
    >>> lin = nn.Linear(4, 3)
    >>> W = lin.weight.detach().clone()
    >>> S = SharedWeight(torch.zeros(3, 4))
    >>> _ = parametrize.register_parametrization(lin, "weight", ResidualWeight(S, rank=3))
    >>> bool((lin.weight - W).abs().max() <= 512 * torch.finfo(W.dtype).eps * W.abs().max())  # SVD rounding
    True
    """

    def __init__(
        self,
        shared: SharedWeight,
        rank: int,
        diagonal: bool = True,
        weight_shape: Optional[Tuple[int, ...]] = None,
    ):
        super().__init__()
        self.shared = shared
        out_f, in_f = shared.weight.shape
        self.rank = max(0, min(int(rank), out_f, in_f))
        self.diagonal = bool(diagonal)
        # e.g. (out, in, 1) for a pointwise Conv1d: the matrix is viewed in that shape
        self.weight_shape = tuple(weight_shape) if weight_shape is not None else (out_f, in_f)
        if math.prod(self.weight_shape) != out_f * in_f or self.weight_shape[:2] != (out_f, in_f):
            raise ValueError(
                f"ResidualWeight: weight_shape {self.weight_shape} is not a view of the shared "
                f"matrix of shape {(out_f, in_f)}"
            )
        # set by convert.share when rebuilding a student whose weights are loaded next
        self.skip_init = False

    def forward(self, A: torch.Tensor, B: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return residual_weight(self.shared.weight, A, B, d).reshape(self.weight_shape)

    def right_inverse(self, W: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        S = self.shared.weight
        if tuple(W.shape) != self.weight_shape:
            raise ValueError(
                f"ResidualWeight: weight of shape {tuple(W.shape)} does not match the "
                f"shared matrix of shape {self.weight_shape}"
            )
        W = W.reshape(S.shape)
        if self.skip_init:
            out_f, in_f = W.shape
            n_d = max(out_f, in_f) if self.diagonal else 0
            return W.new_zeros(out_f, self.rank), W.new_zeros(self.rank, in_f), W.new_zeros(n_d)
        return _residual_terms(W, S, self.rank, self.diagonal)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, diagonal={self.diagonal}"


class ResidualSharedLinear(nn.Module):
    """Linear layer with weight ``S_g + A B + D`` (ResidualTransformer).

    Arguments
    ---------
    shared : SharedWeight
        The group's shared ``S (out, in)``; referenced, not copied.
    rank : int
        Rank ``r`` of the per-layer low-rank term.
    bias : bool
        Whether the layer has its own (per-layer) bias.
    diagonal : bool
        Whether the per-layer wrapped-diagonal term exists.

    Example
    -------
    >>> S = SharedWeight(torch.randn(8, 6))
    >>> a, b = ResidualSharedLinear(S, rank=2), ResidualSharedLinear(S, rank=2)
    >>> y = a(torch.randn(5, 6))
    >>> tuple(y.shape)
    (5, 8)
    >>> a.shared.weight is b.shared.weight
    True
    >>> sum(p.numel() for p in nn.ModuleList([a, b]).parameters())  # 48 + 2*(2*(8+6) + 8 + 8)
    136
    """

    def __init__(self, shared: SharedWeight, rank: int, bias: bool = True, diagonal: bool = True):
        super().__init__()
        self.shared = shared
        out_f, in_f = shared.weight.shape
        self.out_features, self.in_features = out_f, in_f
        r = max(0, min(int(rank), out_f, in_f))
        # A zero, B random: starts at W = S and can learn (LoRA-style)
        self.A = nn.Parameter(torch.zeros(out_f, r))
        self.B = nn.Parameter(torch.randn(r, in_f) / math.sqrt(in_f))
        self.d = nn.Parameter(torch.zeros(max(out_f, in_f) if diagonal else 0))
        self.bias = nn.Parameter(torch.zeros(out_f)) if bias else None

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, shared: SharedWeight, rank: int, diagonal: bool = True
    ) -> "ResidualSharedLinear":
        """A layer equal to ``linear`` (exactly at full rank), sharing ``shared``.

        Arguments
        ---------
        linear : nn.Linear
            The layer to reproduce; weight ``(out, in)``, bias copied.
        shared : SharedWeight
            The group's shared matrix.
        rank : int
            Rank of the per-layer low-rank term.
        diagonal : bool
            Whether the per-layer diagonal term exists.

        Returns
        -------
        ResidualSharedLinear
        """
        layer = cls(shared, rank, bias=linear.bias is not None, diagonal=diagonal)
        A, B, d = _residual_terms(linear.weight, shared.weight, layer.A.shape[1], diagonal)
        with torch.no_grad():
            layer.A.copy_(A)
            layer.B.copy_(B)
            layer.d.copy_(d)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight ``(out, in)``."""
        return residual_weight(self.shared.weight, self.A, self.B, self.d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., in)`` -> ``(..., out)``."""
        return F.linear(x, self.weight, self.bias)


class BottleneckAdapter(nn.Module):
    """Bottleneck adapter ``LayerNorm(x + up(GELU(down(x))))`` (MiniALBERT).

    ``up`` starts at zero, so the adapter starts as ``LayerNorm(x)``, or as the
    identity with ``norm=False`` (useful when the adapter is inserted into a
    pretrained model that should keep its outputs at initialisation).

    Arguments
    ---------
    d_model : int
        Feature size ``D``.
    bottleneck : int
        Inner size (MiniALBERT: 48).
    norm : bool
        Whether the output layer norm exists (MiniALBERT: yes).

    Example
    -------
    >>> ad = BottleneckAdapter(16, bottleneck=4, norm=False)
    >>> x = torch.randn(2, 5, 16)
    >>> torch.equal(ad(x), x)
    True
    """

    def __init__(self, d_model: int, bottleneck: int = 48, norm: bool = True):
        super().__init__()
        self.down = nn.Linear(d_model, bottleneck)
        self.up = nn.Linear(bottleneck, d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.norm = nn.LayerNorm(d_model) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., D)`` -> ``(..., D)``."""
        return self.norm(x + self.up(F.gelu(self.down(x))))


class LowRankDelta(nn.Module):
    """A trainable low-rank matrix ``scale * A @ B`` added to a (shared) weight.

    Arguments
    ---------
    out_features : int
        Rows.
    in_features : int
        Columns.
    rank : int
        ``r`` (clamped to ``min(out, in)``).
    scale : float
        Multiplier of the product (LoRA's ``alpha / r``).

    Example
    -------
    >>> delta = LowRankDelta.from_matrix(torch.randn(5, 3), rank=3)
    >>> tuple(delta().shape)
    (5, 3)
    """

    def __init__(self, out_features: int, in_features: int, rank: int, scale: float = 1.0):
        super().__init__()
        r = max(0, min(int(rank), out_features, in_features))
        self.scale = float(scale)
        self.A = nn.Parameter(torch.zeros(out_features, r))
        self.B = nn.Parameter(torch.randn(r, in_features) / math.sqrt(in_features))

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor, rank: int, scale: float = 1.0) -> "LowRankDelta":
        """Initialise from the rank-r truncated SVD of ``matrix / scale``.

        Arguments
        ---------
        matrix : torch.Tensor
            ``(out, in)`` target (e.g. original minus shared weight).
        rank : int
            ``r``.
        scale : float
            Multiplier of the product.

        Returns
        -------
        LowRankDelta
        """
        out_f, in_f = matrix.shape
        delta = cls(out_f, in_f, rank, scale)
        A, B = low_rank_factors(matrix / delta.scale, delta.A.shape[1])
        with torch.no_grad():
            delta.A.copy_(A)
            delta.B.copy_(B)
        return delta

    def forward(self) -> torch.Tensor:
        """The delta ``(out, in)``."""
        return (self.A @ self.B) * self.scale

    def extra_repr(self) -> str:
        return f"out={self.A.shape[0]}, in={self.B.shape[1]}, rank={self.A.shape[1]}, scale={self.scale}"


class LoRALinear(nn.Module):
    """``base(x) + scale * x B^T A^T``: a low-rank adapted linear layer.

    The base layer is referenced (it may be shared by several ``LoRALinear``
    modules, one per recursion step).

    Arguments
    ---------
    base : nn.Linear
        The (shared) layer, weight ``(out, in)``.
    rank : int
        ``r``.
    scale : float
        Multiplier of the low-rank path.

    Example
    -------
    >>> base = nn.Linear(6, 4)
    >>> lora = LoRALinear(base, rank=2)
    >>> x = torch.randn(3, 6)
    >>> torch.equal(lora(x), base(x))  # A starts at zero
    True
    """

    def __init__(self, base: nn.Linear, rank: int, scale: float = 1.0):
        super().__init__()
        self.base = base
        self.delta = LowRankDelta(base.out_features, base.in_features, rank, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., in)`` -> ``(..., out)``."""
        low = F.linear(F.linear(x, self.delta.B), self.delta.A) * self.delta.scale
        return self.base(x) + low
