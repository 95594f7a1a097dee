"""Linformer self-attention: keys and values projected along time to k rows.

Following CALD's RoBERTa -> Linformer student (see ``METHODS.md``): the
projections are learned ``(k, max_len)`` matrices initialised N(0, 1); for a
sequence of valid length ``n`` only their first ``n`` columns are used and the
result is divided by ``sqrt(n)``, so padding never enters the keys/values and
the projected rows keep unit scale whatever ``n``. This is done for the whole
batch at once by zeroing the columns beyond each sequence's length and scaling
per sample.

Share modes (``share=``): ``"none"`` one projection for keys (``E``) and one
for values (``F``) per layer; ``"kv"`` one projection ``E`` per layer for both;
``"layer"`` one :class:`LinformerProjection` passed in by the caller
(``shared_proj=``) and used by every layer for keys and values.

Sequences longer than ``max_len`` (``too_long=``):

- ``"error"`` (default): a ``ValueError`` naming the limit; build with a larger
  ``max_len`` or choose ``"interpolate"``. Only valid frames count, so a short
  sequence in a long padded batch is fine.
- ``"interpolate"``: for a sequence of length ``n > max_len`` the projection is
  resampled linearly to ``n`` columns (``align_corners`` style), which makes the
  layer length-agnostic (useful for speech, whose lengths vary widely). Sequences
  with ``n <= max_len`` still use the exact columns, so results do not depend on
  the rest of the batch.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class LinformerProjection(nn.Module):
    """A learned projection along time, ``weight (k, max_len)``, init N(0, 1).

    One instance can be shared by several :class:`LinformerAttention` layers
    (``share="layer"``).

    Arguments
    ---------
    max_len : int
        Longest valid length the projection covers exactly.
    k : int
        Number of projected rows.
    device, dtype
        Factory arguments of the weight.

    Example
    -------
    >>> proj = LinformerProjection(max_len=10, k=4)
    >>> proj.columns(torch.tensor([10, 3]), T=10).shape
    torch.Size([2, 4, 10])
    """

    def __init__(self, max_len: int, k: int = 256, device=None, dtype=None) -> None:
        super().__init__()
        if max_len < 1 or k < 1:
            raise ValueError(f"LinformerProjection: max_len and k must be >= 1, found {max_len}, {k}")
        self.max_len = max_len
        self.k = k
        self.weight = nn.Parameter(torch.randn(k, max_len, device=device, dtype=dtype))

    def columns(
        self,
        lengths: torch.Tensor,
        T: int,
        scale_by_length: bool = True,
        too_long: str = "error",
    ) -> torch.Tensor:
        """The per-sample projection matrices, masked and scaled.

        Arguments
        ---------
        lengths : torch.Tensor
            ``(B,)`` valid lengths (absolute frames).
        T : int
            Padded length of the batch.
        scale_by_length : bool
            Divide by ``sqrt(length)``.
        too_long : str
            ``"error"`` or ``"interpolate"`` for lengths beyond ``max_len``.

        Returns
        -------
        torch.Tensor
            ``(B, k, T)``; columns at or beyond each length are 0.
        """
        if too_long not in _TOO_LONG:
            raise ValueError(
                f"LinformerProjection: unknown too_long '{too_long}', expected one of {sorted(_TOO_LONG)}"
            )
        longest = int(lengths.max()) if lengths.numel() else 0
        if longest > self.max_len:
            cols = _TOO_LONG[too_long](self.weight, lengths, T)
        else:
            cols = self.weight[:, :T]
            if T > self.max_len:  # only padding lies beyond max_len
                cols = F.pad(cols, (0, T - self.max_len))
            cols = cols.unsqueeze(0)
        valid = torch.arange(T, device=lengths.device) < lengths[:, None]
        scale = valid.to(cols.dtype)
        if scale_by_length:
            scale = scale / lengths.clamp(min=1).to(cols.dtype).sqrt()[:, None]
        return cols * scale[:, None, :]


def _refuse_long(weight: torch.Tensor, lengths: torch.Tensor, T: int) -> torch.Tensor:
    raise ValueError(
        f"LinformerAttention: a sequence has {int(lengths.max())} valid frames but the projection "
        f"covers max_len={weight.shape[1]}; build the layer with a larger max_len, "
        "or with too_long='interpolate' to resample the projection"
    )


def _interpolate_long(weight: torch.Tensor, lengths: torch.Tensor, T: int) -> torch.Tensor:
    max_len = weight.shape[1]
    n = lengths.to(weight.dtype)[:, None]
    # stretch only the sequences that are too long; the others keep exact columns
    stretch = torch.where(n > max_len, (max_len - 1) / (n - 1).clamp(min=1), torch.ones_like(n))
    pos = (torch.arange(T, device=weight.device, dtype=weight.dtype) * stretch).clamp(max=max_len - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=max_len - 1)
    frac = (pos - lo.to(pos.dtype)).unsqueeze(0)
    cols = weight[:, lo] * (1 - frac) + weight[:, hi] * frac  # (k, B, T)
    return cols.transpose(0, 1)


# policy for valid lengths beyond max_len, by name
_TOO_LONG: Dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "error": _refuse_long,
    "interpolate": _interpolate_long,
}


def _own_pair(max_len, k, shared, factory) -> Tuple[LinformerProjection, Optional[LinformerProjection]]:
    return LinformerProjection(max_len, k, **factory), LinformerProjection(max_len, k, **factory)


def _own_single(max_len, k, shared, factory):
    return LinformerProjection(max_len, k, **factory), None


def _caller_shared(max_len, k, shared, factory):
    return shared, None


# share mode -> (key projection E, value projection F or None when E serves both)
_SHARE_MODES: Dict[str, Callable] = {"none": _own_pair, "kv": _own_single, "layer": _caller_shared}


class LinformerAttention(nn.Module):
    """Multi-head self-attention over keys / values projected along time.

    Arguments
    ---------
    d_model : int
        Feature size D.
    num_heads : int
        Attention heads; must divide ``d_model``.
    max_len : int
        Longest valid length the projections cover (e.g. the teacher's max
        positions).
    k : int
        Projected length (256 in CALD).
    share : str
        ``"none"``, ``"kv"`` or ``"layer"`` (see module docstring).
    shared_proj : LinformerProjection, optional
        The projection every layer uses; required for and only for ``share="layer"``.
    dropout : float
        Dropout on the attention weights (training only).
    bias : bool
        Biases of ``q_proj, k_proj, v_proj, out_proj``.
    scale_by_length : bool
        Divide projected keys / values by ``sqrt(valid length)``.
    too_long : str
        ``"error"`` or ``"interpolate"`` for valid lengths beyond ``max_len``.
    device, dtype
        Factory arguments.

    Example
    -------
    >>> attn = LinformerAttention(d_model=16, num_heads=2, max_len=12, k=4)
    >>> x = torch.randn(2, 12, 16)
    >>> y = attn(x, lengths=torch.tensor([12, 7]))
    >>> y.shape, bool((y[1, 7:] == 0).all())
    (torch.Size([2, 12, 16]), True)
    >>> shared = LinformerProjection(max_len=12, k=4)
    >>> layers = [LinformerAttention(16, 2, 12, k=4, share="layer", shared_proj=shared) for _ in range(3)]
    >>> layers[0].E is layers[2].E
    True
    """

    #: sub-modules that conversion always copies from the replaced attention, whatever
    #: its ``init`` (CALD keeps Q / K / V / out: ``convert.attention_init``); the
    #: projections E / F are new (``convert.new_parameters``)
    kept_from_attention = ("q_proj", "k_proj", "v_proj", "out_proj")

    #: every output reads the whole sequence through the projected keys and values
    causal = False

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        max_len: int,
        k: int = 256,
        share: str = "none",
        shared_proj: Optional[LinformerProjection] = None,
        dropout: float = 0.0,
        bias: bool = True,
        scale_by_length: bool = True,
        too_long: str = "error",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(
                f"LinformerAttention: num_heads={num_heads} must divide d_model={d_model}"
            )
        if share not in _SHARE_MODES:
            raise ValueError(
                f"LinformerAttention: unknown share '{share}', expected one of {sorted(_SHARE_MODES)}"
            )
        if too_long not in _TOO_LONG:
            raise ValueError(
                f"LinformerAttention: unknown too_long '{too_long}', expected one of {sorted(_TOO_LONG)}"
            )
        if (share == "layer") != (shared_proj is not None):
            raise ValueError(
                "LinformerAttention: shared_proj=LinformerProjection(...) is required with "
                f"share='layer' and only then; found share='{share}', "
                f"shared_proj={type(shared_proj).__name__}"
            )
        if shared_proj is not None and (shared_proj.k, shared_proj.max_len) != (k, max_len):
            raise ValueError(
                f"LinformerAttention: shared_proj has k={shared_proj.k}, max_len={shared_proj.max_len}; "
                f"the layer was built with k={k}, max_len={max_len}"
            )
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.num_heads = num_heads
        self.max_len = max_len
        self.k = k
        self.share = share
        self.dropout = dropout
        self.scale_by_length = scale_by_length
        self.too_long = too_long
        self.q_proj = nn.Linear(d_model, d_model, bias=bias, **factory)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias, **factory)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias, **factory)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias, **factory)
        self.E, value_proj = _SHARE_MODES[share](max_len, k, shared_proj, factory)
        if value_proj is not None:
            self.F = value_proj

    @property
    def value_projection(self) -> LinformerProjection:
        """The projection applied to values (``F``, or ``E`` when shared)."""
        return self.F if "F" in self._modules else self.E

    def _project(self, linear: nn.Module, cols: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``cols @ linear(x)``, in whichever order costs less.

        With more frames than rows (``T > k``: long inputs) projecting first,
        ``linear(cols @ x)`` plus a bias fix, saves a ``T x D x D`` product; with
        fewer (``T < k``: short texts) the linear layer runs on the ``T`` frames.
        Both are the same formula.
        """
        if x.shape[1] <= cols.shape[1]:
            return cols @ linear(x)
        out = linear(cols @ x)
        bias = getattr(linear, "bias", None)
        if bias is not None:
            # linear() added the bias once per row; cols @ (x W + b) adds it sum(cols) times
            out = out + (cols.sum(-1, keepdim=True) - 1) * bias
        return out

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attend from every frame to the k projected keys / values.

        Arguments
        ---------
        x : torch.Tensor
            ``(B, T, D)`` right-padded inputs.
        lengths : torch.Tensor, optional
            ``(B,)`` absolute valid frame counts; None means all T frames valid.

        Returns
        -------
        torch.Tensor
            ``(B, T, D)``, 0 at padded frames.
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"LinformerAttention: x must be (B, T, {self.d_model}), found shape {tuple(x.shape)}"
            )
        b, T, _ = x.shape
        full = lengths is None
        if full:
            lengths = torch.full((b,), T, device=x.device, dtype=torch.long)
        elif lengths.is_floating_point():
            raise ValueError(
                f"LinformerAttention: lengths must be absolute frame counts (an integer tensor), "
                f"found {lengths.dtype}; convert relative lengths with torch.round(rel * T).long()"
            )
        elif lengths.shape != (b,) or bool((lengths < 0).any()) or bool((lengths > T).any()):
            raise ValueError(
                f"LinformerAttention: lengths must be ({b},) with values in [0, {T}], "
                f"found shape {tuple(lengths.shape)} values {lengths.tolist()}"
            )
        lengths = lengths.to(x.device)
        key_cols = self.E.columns(lengths, T, self.scale_by_length, self.too_long).to(x.dtype)
        if self.value_projection is self.E:
            value_cols = key_cols
        else:
            value_cols = self.F.columns(lengths, T, self.scale_by_length, self.too_long).to(x.dtype)
        keys = self._project(self.k_proj, key_cols, x)  # (B, k, D)
        values = self._project(self.v_proj, value_cols, x)
        h, dh = self.num_heads, self.d_model // self.num_heads
        q = self.q_proj(x).view(b, T, h, dh).transpose(1, 2)
        keys = keys.view(b, -1, h, dh).transpose(1, 2)
        values = values.view(b, -1, h, dh).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, keys, values, dropout_p=self.dropout if self.training else 0.0
        )
        out = self.out_proj(out.transpose(1, 2).reshape(b, T, self.d_model))
        if not full:
            out = out * (torch.arange(T, device=x.device) < lengths[:, None]).unsqueeze(-1).to(out.dtype)
        return out
