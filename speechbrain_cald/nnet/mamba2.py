"""Mamba2 (SSD) token mixer with a fast plain-PyTorch path and the mamba_ssm kernels.

Parameters, their names and shapes are exactly those of ``mamba_ssm.Mamba2`` and
of transformers' ``Mamba2Mixer`` (``in_proj``, ``conv1d``, ``dt_bias``,
``A_log``, ``D``, ``norm.weight``, ``out_proj``), so a ``state_dict`` moves
between the three with ``strict=True``.

Beyond both, this module takes right-padded batches with absolute ``lengths``
(padded frames give 0 and never change valid frames or the final state) and
returns / accepts the recurrent state, so a long recording processed piece by
piece gives the output of one pass.
"""

from __future__ import annotations

import logging
import math
import weakref
from functools import lru_cache, partial
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from speechbrain_cald.nnet.rmsnorm import RMSNormGated
from speechbrain_cald.nnet.ssd import needs_autograd, scratch, ssd_chunked

logger = logging.getLogger(__name__)

class Mamba2State(NamedTuple):
    """Recurrent state of a ``Mamba2`` layer, laid out as mamba_ssm's inference cache.

    Attributes
    ----------
    conv : torch.Tensor
        The last ``d_conv`` inputs of the depthwise convolution ``(B, conv_dim, d_conv)``
        (zeros where the sequence was shorter).
    ssm : torch.Tensor
        The SSM state ``(B, nheads, headdim, d_state)``.
    """

    conv: torch.Tensor
    ssm: torch.Tensor


class Mamba2(torch.nn.Module):
    """Mamba2 mixer: ``y = mixer(x, lengths)`` with ``x, y (B, T, D)``.

    Arguments
    ---------
    d_model : int
        Model width ``D``.
    d_state : int
        SSM state size ``N``.
    d_conv : int
        Depthwise causal convolution width.
    conv_init : float, optional
        If given, the conv weight is drawn from ``U(-conv_init, conv_init)``.
    expand : int
        Inner width ``d_inner = expand * d_model``.
    headdim : int
        Head size ``P``; ``nheads = d_inner / headdim``.
    d_ssm : int, optional
        Only ``None`` (all of ``d_inner`` goes through the SSM) is supported.
    ngroups : int
        Groups sharing ``B`` and ``C``.
    A_init_range : tuple of float
        ``A = -U(A_init_range)`` per head.
    D_has_hdim : bool
        ``D`` per channel ``(d_inner,)`` instead of per head.
    rmsnorm : bool
        Gated RMS norm before ``out_proj`` (else the plain ``silu(z)`` gate).
    norm_before_gate : bool
        See ``RMSNormGated``.
    dt_min, dt_max, dt_init_floor : float
        Initial ``dt`` drawn log-uniformly in ``[dt_min, dt_max]``, floored.
    dt_limit : tuple of float
        ``dt`` is clamped to this range after ``softplus``.
    bias : bool
        Biases of ``in_proj`` and ``out_proj``.
    conv_bias : bool
        Bias of ``conv1d``.
    chunk_size : int
        Frames per SSD chunk (64 is fastest on CPU here; the CUDA kernels
        prefer 256). The output does not depend on it.
    block_size : int
        The plain path runs the whole layer over blocks of this many frames,
        carrying the state, which bounds memory and keeps buffers reusable;
        rounded to a multiple of ``chunk_size``. Each block costs a fixed
        ~100 operator calls: with 3072 instead of 2048, one minute of 50 Hz
        frames is one block, and BiMamba2 (d_model 768) ran 8% faster at
        T = 3000 and 3% at 12000 (forward, 2026-11-26), for a larger peak in
        training (1.09 instead of 0.90 GB at T = 12000).
    checkpoint_blocks : bool
        Under autograd, keep only each block's inputs and recompute the block
        in the backward pass (``torch.utils.checkpoint``): training memory of
        one block instead of the whole sequence, for about one extra forward.
    checkpoint_scan : bool
        Under autograd, store only what enters the work between the two
        projections (the ``in_proj`` output and the states) and run the causal
        conv, SSD scan and gated norm again in the backward pass; the
        projections are stored as usual. Their intermediates (the scan's
        per-chunk weights, states and read-outs above all) were ~80% of the
        stored tensors, and recomputing them is a small part of a training step,
        whose time the projections dominate. The forward then takes the fast
        in-place path, as without autograd. ``False`` stores everything.
    backend : str
        ``"auto"`` (mamba_ssm kernels for CUDA inputs when they import, else
        plain PyTorch), ``"torch"`` or ``"mamba_ssm"``.
    use_mem_eff_path, layer_idx
        Accepted for mamba_ssm compatibility.
    device, dtype
        Factory arguments.

    Example
    -------
    >>> mixer = Mamba2(16, d_state=8, expand=2, headdim=8, chunk_size=4)
    >>> x = torch.randn(2, 10, 16)
    >>> y = mixer(x, lengths=torch.tensor([10, 7]))
    >>> y.shape, bool((y[1, 7:] == 0).all())
    (torch.Size([2, 10, 16]), True)
    >>> y1, state = mixer(x[:, :6], return_state=True)
    >>> y2 = mixer(x[:, 6:], state=state)
    >>> y = mixer(x)  # the same up to rounding (other shapes, other chunk boundaries):
    >>> bool((torch.cat([y1, y2], 1) - y).abs().max() <= 512 * torch.finfo(y.dtype).eps * y.abs().max())
    True
    """

    #: output at t reads frames <= t only: a causal LM's mixer, or one direction of BiMamba2
    causal = True

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        conv_init: Optional[float] = None,
        expand: int = 2,
        headdim: int = 64,
        d_ssm: Optional[int] = None,
        ngroups: int = 1,
        A_init_range: Tuple[float, float] = (1, 16),
        D_has_hdim: bool = False,
        rmsnorm: bool = True,
        norm_before_gate: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: Tuple[float, float] = (0.0, float("inf")),
        bias: bool = False,
        conv_bias: bool = True,
        chunk_size: int = 64,
        block_size: int = 3072,
        checkpoint_blocks: bool = False,
        checkpoint_scan: bool = True,
        backend: str = "auto",
        use_mem_eff_path: bool = True,
        layer_idx: Optional[int] = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        if d_ssm is not None and d_ssm != self.d_inner:
            raise NotImplementedError(
                f"Mamba2: d_ssm={d_ssm} (a gated-MLP part beside the SSM) is not "
                f"supported; use d_ssm=None (= d_inner {self.d_inner})"
            )
        if self.d_inner % headdim != 0:
            raise ValueError(
                f"Mamba2: d_inner = expand * d_model = {self.d_inner} is not a "
                f"multiple of headdim {headdim}"
            )
        self.headdim = headdim
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups != 0:
            raise ValueError(f"Mamba2: nheads {self.nheads} not a multiple of ngroups {ngroups}")
        self.ngroups = ngroups
        self.D_has_hdim = D_has_hdim
        self.rmsnorm = rmsnorm
        self.norm_before_gate = norm_before_gate
        self.dt_limit = tuple(dt_limit)
        self.chunk_size = chunk_size
        self.block_size = max(chunk_size, (block_size // chunk_size) * chunk_size)
        self.checkpoint_blocks = checkpoint_blocks
        self.checkpoint_scan = checkpoint_scan
        if backend not in _BACKENDS and backend != "auto":
            raise ValueError(
                f"Mamba2: unknown backend '{backend}': expected 'auto' or one of {sorted(_BACKENDS)}"
            )
        self.backend = backend
        self.use_mem_eff_path = use_mem_eff_path
        self.layer_idx = layer_idx
        self.conv_dim = self.d_inner + 2 * ngroups * d_state

        # in_proj output order, as in mamba_ssm: [z, x, B, C, dt]
        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads
        self.in_proj = torch.nn.Linear(d_model, d_in_proj, bias=bias, **factory)
        self.conv1d = torch.nn.Conv1d(
            self.conv_dim, self.conv_dim, kernel_size=d_conv, groups=self.conv_dim,
            padding=d_conv - 1, bias=conv_bias, **factory,
        )
        if conv_init is not None:
            torch.nn.init.uniform_(self.conv1d.weight, -conv_init, conv_init)

        # dt initialised log-uniform in [dt_min, dt_max]; dt_bias is its softplus inverse
        dt = torch.exp(
            torch.rand(self.nheads, **factory) * (math.log(dt_max) - math.log(dt_min))
            + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        self.dt_bias = torch.nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.dt_bias._no_weight_decay = True

        if not (A_init_range[0] > 0 and A_init_range[1] >= A_init_range[0]):
            raise ValueError(f"Mamba2: A_init_range must satisfy 0 < lo <= hi, got {A_init_range}")
        A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(*A_init_range)
        self.A_log = torch.nn.Parameter(torch.log(A).to(dtype=dtype))
        self.A_log._no_weight_decay = True
        self.D = torch.nn.Parameter(
            torch.ones(self.d_inner if D_has_hdim else self.nheads, device=device)
        )
        self.D._no_weight_decay = True
        if rmsnorm:
            self.norm = RMSNormGated(
                self.d_inner, eps=1e-5, norm_before_gate=norm_before_gate,
                group_size=self.d_inner // ngroups, **factory,
            )
        self.out_proj = torch.nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    # ------------------------------------------------------------------ API
    def forward(
        self,
        x: torch.Tensor,
        lengths: Optional[torch.Tensor] = None,
        state: Optional[Union[Mamba2State, Sequence[torch.Tensor]]] = None,
        return_state: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, Mamba2State]]:
        """Mix ``x (B, T, D)`` causally in time.

        Arguments
        ---------
        x : torch.Tensor
            Right-padded input ``(B, T, D)``.
        lengths : torch.Tensor, optional
            Absolute valid lengths ``(B,)`` (long); ``None`` = all ``T``.
        state : Mamba2State, optional
            State after the previous piece of the same sequences.
        return_state : bool
            Also return the state after each sequence's last valid frame.

        Returns
        -------
        y : torch.Tensor
            ``(B, T, D)``, exactly 0 at padded frames.
        state : Mamba2State
            Only when ``return_state``.
        """
        self._check_input(x, lengths, state)
        if state is not None:
            state = Mamba2State(*state)
        backend = self._resolve_backend(x)
        y, new_state = _BACKENDS[backend](self, x, lengths, state, return_state)
        return (y, new_state) if return_state else y

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> Mamba2State:
        """A zero state for ``batch_size`` sequences (what ``state=None`` means).

        Arguments
        ---------
        batch_size : int
            Number of sequences ``B``.
        device, dtype
            Default to those of the parameters.

        Returns
        -------
        Mamba2State
            ``conv (B, conv_dim, d_conv)`` and ``ssm (B, nheads, headdim, d_state)`` zeros.
        """
        device = self.out_proj.weight.device if device is None else device
        dtype = self.out_proj.weight.dtype if dtype is None else dtype
        return Mamba2State(
            torch.zeros(batch_size, self.conv_dim, self.d_conv, device=device, dtype=dtype),
            torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=device, dtype=dtype),
        )

    # -------------------------------------------------------------- helpers
    def _check_input(self, x, lengths, state) -> None:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"Mamba2: x must be (B, T, d_model={self.d_model}), got shape {tuple(x.shape)}"
            )
        if lengths is not None:
            if lengths.shape != (x.shape[0],) or lengths.is_floating_point():
                raise ValueError(
                    f"Mamba2: lengths must be integer frame counts of shape ({x.shape[0]},), "
                    f"got {lengths.dtype} {tuple(lengths.shape)} (relative lengths are "
                    "converted to absolute ones at the task edge)"
                )
            if bool((lengths < 0).any()) or bool((lengths > x.shape[1]).any()):
                raise ValueError(
                    f"Mamba2: lengths must lie in [0, T={x.shape[1]}], got {lengths.tolist()}"
                )
        if state is not None:
            expected = self.allocate_state(x.shape[0], device="meta")
            for name, want, got in zip(("conv", "ssm"), expected, state):
                if tuple(got.shape) != tuple(want.shape):
                    raise ValueError(
                        f"Mamba2: state.{name} must be {tuple(want.shape)}, got {tuple(got.shape)}"
                    )

    def _resolve_backend(self, x: torch.Tensor) -> str:
        if self.backend != "auto":
            return self.backend
        ops = _mamba_ssm_ops() if x.is_cuda else None
        chosen = "mamba_ssm" if ops is not None else "torch"
        _log_auto_backend(x.device.type, chosen, ops is not None and "split_conv1d_scan" in ops)
        return chosen

    def _split_dt(self, dt_raw: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """softplus(dt + dt_bias), clamped to ``dt_limit``, 0 at padded frames."""
        dt = F.softplus(dt_raw + self.dt_bias)
        if self.dt_limit != (0.0, float("inf")):
            dt = dt.clamp(*self.dt_limit)
        if mask is not None:
            dt = dt * mask[..., None]
        return dt

    def _gate_and_project(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = self.norm(y, z) if self.rmsnorm else y * F.silu(z)
        return self.out_proj(y)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, "
            f"expand={self.expand}, headdim={self.headdim}, ngroups={self.ngroups}, "
            f"chunk_size={self.chunk_size}, backend={self.backend}"
        )


# ---------------------------------------------------------------- plain path
class _StackedParams(NamedTuple):
    """The parameters of ``S`` Mamba2 layers of equal sizes, stacked on a leading dim."""

    w_in: torch.Tensor  # (S, d_in_proj, D)
    b_in: Optional[torch.Tensor]  # (S, d_in_proj)
    conv_w: torch.Tensor  # (S, conv_dim, d_conv)
    conv_b: Optional[torch.Tensor]  # (S, conv_dim)
    dt_bias: torch.Tensor  # (S, H)
    A: torch.Tensor  # (S, H), negative
    D: torch.Tensor  # (S, H) or (S, H, P)
    w_out: torch.Tensor  # (S, D, d_inner), times the gated norm's weight
    b_out: Optional[torch.Tensor]  # (S, D)


# in_proj's output width rounded up to this many features: this CPU's GEMM
# kernels run products with 1030 output features (d_model 384, d_state 128)
# far slower per FLOP than with 1040 (docs/bench/mixers_short.md)
_IN_PROJ_ALIGN = 16

# the derived parameters of a layer or a stack of layers (padded in_proj, folded out_proj, A),
# kept between calls without autograd; rebuilt when a parameter changes
_DERIVED: "weakref.WeakKeyDictionary[Mamba2, Dict[tuple, tuple]]" = weakref.WeakKeyDictionary()


def _stack_params(mixers: Sequence[Mamba2], dtype: torch.dtype) -> _StackedParams:
    """The layers' parameters stacked on a leading dim, in the form the plain path uses.

    ``in_proj``'s weight gets zero rows up to a multiple of ``_IN_PROJ_ALIGN``
    (their outputs are never read); the gated norm's weight is folded into
    ``out_proj``. Without autograd the result is cached, keyed on
    its parameters' storage and version counters (in-place updates such as an
    optimizer step or ``load_state_dict`` invalidate it); several layers are
    cached under the first, keyed on all of theirs.
    """
    params = [p for m in mixers for p in m.parameters()]
    if needs_autograd(*params):
        return _build_params(mixers, dtype)
    key = (dtype, *((p.data_ptr(), p._version, p.dtype, p.device) for p in params))
    by_layers = _DERIVED.setdefault(mixers[0], {})
    layers = tuple(id(m) for m in mixers)
    cached = by_layers.get(layers)
    if cached is None or cached[0] != key:
        with torch.inference_mode(False), torch.no_grad():  # usable in and out of inference mode
            # the entry holds the parameters' storages: while it lives, none of their
            # addresses can be handed to a new tensor, so an equal key means the same data
            kept = tuple(p.detach() for p in params)
            cached = by_layers[layers] = (key, _build_params(mixers, dtype), kept)
    return cached[1]


def _build_params(mixers: Sequence[Mamba2], dtype: torch.dtype) -> _StackedParams:
    """``_StackedParams`` of ``mixers``: views where one layer allows, else stacked copies."""

    def stack(get):
        tensors = [get(m) for m in mixers]
        if tensors[0] is None:
            return None
        return tensors[0][None] if len(tensors) == 1 else torch.stack(tensors)

    def aligned(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        pad = -t.shape[0] % _IN_PROJ_ALIGN if t is not None else 0
        return t if not pad else F.pad(t, (0, 0) * (t.dim() - 1) + (0, pad))

    first = mixers[0]
    return _StackedParams(
        w_in=stack(lambda m: aligned(m.in_proj.weight)),
        b_in=stack(lambda m: aligned(m.in_proj.bias)),
        conv_w=stack(lambda m: m.conv1d.weight[:, 0, :]),
        conv_b=stack(lambda m: m.conv1d.bias),
        dt_bias=stack(lambda m: m.dt_bias),
        A=stack(lambda m: -torch.exp(m.A_log.float()).to(dtype)),
        D=stack(lambda m: (m.D.view(m.nheads, m.headdim) if m.D_has_hdim else m.D).to(dtype)),
        # the gated norm's weight scales out_proj's input features: folded into
        # its columns once per call instead of a pass over the sequence
        w_out=stack(lambda m: m.out_proj.weight * m.norm.weight.to(m.out_proj.weight.dtype)
                    if first.rmsnorm else m.out_proj.weight),
        b_out=stack(lambda m: m.out_proj.bias),
    )


def mamba2_stacked_forward(
    mixers: Sequence[Mamba2], xs: torch.Tensor, lengths: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Run ``S`` Mamba2 layers of equal sizes, each on its own input, as one batch.

    Every step (projections as batched products, conv, one SSD scan over
    ``S·B`` sequences, gated norm) is issued once for all layers: BiMamba2 runs
    its forward and backward directions this way, with half the operator calls
    of two separate passes. Plain-PyTorch path only; no state in or out.

    Arguments
    ---------
    mixers : sequence of Mamba2
        ``S`` layers built with the same hyper-parameters.
    xs : torch.Tensor
        ``(S, B, T, D)``; ``xs[i]`` is the input of ``mixers[i]``.
    lengths : torch.Tensor, optional
        Absolute valid lengths ``(B,)``, shared by all ``S`` inputs.

    Returns
    -------
    torch.Tensor
        ``(S, B, T, D)``, ``ys[i] = mixers[i](xs[i], lengths)``.

    Example
    -------
    >>> a, b = Mamba2(16, d_state=8, headdim=8), Mamba2(16, d_state=8, headdim=8)
    >>> xs = torch.randn(2, 3, 10, 16)
    >>> ys = mamba2_stacked_forward([a, b], xs)
    >>> y = b(xs[1])  # the same up to rounding (one stacked call vs one layer)
    >>> bool((ys[1] - y).abs().max() <= 512 * torch.finfo(y.dtype).eps * y.abs().max())
    True
    """
    first = mixers[0]
    if xs.dim() != 4 or xs.shape[0] != len(mixers):
        raise ValueError(
            f"mamba2_stacked_forward: xs must be ({len(mixers)}, B, T, D), got {tuple(xs.shape)}"
        )
    for m in mixers[1:]:
        if m.extra_repr() != first.extra_repr() or (m.rmsnorm, m.D_has_hdim, m.dt_limit) != (
            first.rmsnorm, first.D_has_hdim, first.dt_limit
        ):
            raise ValueError(
                f"mamba2_stacked_forward: layers differ in hyper-parameters: ({first.extra_repr()}) "
                f"vs ({m.extra_repr()})"
            )
    first._check_input(xs[0], lengths, None)
    y, _ = _forward_stacked(first, _stack_params(mixers, xs.dtype), xs, lengths, None)
    return y


def mamba2_add_reversed(mixer: Mamba2, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out += flip(mixer(flip(x)))`` in time, in place, without autograd or padding.

    BiMamba2's backward direction on the plain path: the input is reversed and
    the output added back one block of frames at a time, so no reversed or
    concatenated copy of the whole sequence is made (at ``T = 12000``, d_model
    768, each was a fresh 37 MB buffer, page-faulted anew by every call).

    Arguments
    ---------
    mixer : Mamba2
        A layer on the plain-PyTorch path.
    x : torch.Tensor
        ``(B, T, D)``, all frames valid.
    out : torch.Tensor
        ``(B, T, D)``, updated in place.

    Returns
    -------
    torch.Tensor
        ``out``.

    Example
    -------
    >>> mixer = Mamba2(16, d_state=8, headdim=8, chunk_size=4, block_size=4)
    >>> x, out = torch.randn(2, 10, 16), torch.zeros(2, 10, 16)
    >>> with torch.no_grad():
    ...     _ = mamba2_add_reversed(mixer, x, out)
    ...     y = mixer(x.flip(1)).flip(1)  # the same up to rounding (accumulated into out):
    ...     bool((out - y).abs().max() <= 512 * torch.finfo(y.dtype).eps * y.abs().max())
    True
    """
    mixer._check_input(x, None, None)
    if out.shape != x.shape:
        raise ValueError(f"mamba2_add_reversed: out must be {tuple(x.shape)}, got {tuple(out.shape)}")
    _forward_stacked(mixer, _stack_params([mixer], x.dtype), x[None], None, None, add_reversed_to=out[None])
    return out


def _forward_torch(
    mixer: Mamba2,
    x: torch.Tensor,
    lengths: Optional[torch.Tensor],
    state: Optional[Mamba2State],
    return_state: bool,
) -> Tuple[torch.Tensor, Optional[Mamba2State]]:
    """One layer: the stacked path with ``S = 1`` (parameters as views, no copies)."""
    y, new_state = _forward_stacked(
        mixer, _stack_params([mixer], x.dtype), x[None], lengths,
        None if state is None else Mamba2State(state.conv[None], state.ssm[None]),
        return_state=return_state,
    )
    if not return_state:
        return y[0], None
    return y[0], Mamba2State(new_state.conv[0], new_state.ssm[0])


def _forward_stacked(
    mixer: Mamba2,
    params: _StackedParams,
    xs: torch.Tensor,
    lengths: Optional[torch.Tensor],
    state: Optional[Mamba2State],
    add_reversed_to: Optional[torch.Tensor] = None,
    return_state: bool = False,
) -> Tuple[torch.Tensor, Optional[Mamba2State]]:
    """``S`` layers over ``xs (S, B, T, D)``, block by block of frames, carrying conv and SSM states.

    ``mixer`` supplies the hyper-parameters; ``state`` holds ``(S, B, ...)``
    tensors (None: zeros, never materialised). The state after the last block
    is formed only with ``return_state`` (else None is returned in its place).
    With ``add_reversed_to`` (``(S, B, T, D)``; no ``lengths``, no autograd)
    the layers run over the time-reversed ``xs``, one reversed block at a
    time, and each block's output is added, reversed back, into
    ``add_reversed_to``, which is returned.
    """
    S, batch, T, _ = xs.shape
    if add_reversed_to is not None and lengths is not None:
        raise ValueError("_forward_stacked: add_reversed_to takes no lengths (padding stays at the end)")
    # a zero state stays None (never materialised) until a block has run
    conv_ctx = None if state is None else state.conv.transpose(-1, -2)  # (S, B, d_conv, conv_dim)
    ssm = None if state is None else state.ssm
    mask = None
    if lengths is not None:
        mask = torch.arange(T, device=xs.device) < lengths.to(xs.device)[:, None]
        # padded inputs may hold anything; never let them reach a product
        xs = xs * mask[..., None].to(xs.dtype)
    outputs = []
    needs_grad = needs_autograd(xs, *params)
    recompute = mixer.checkpoint_blocks and needs_grad
    # without autograd or padding, blocks write straight into the result: no
    # concatenation, one fresh buffer of the whole sequence
    result = add_reversed_to
    if result is None and not needs_grad and mask is None and batch == 1:
        result = xs.new_empty(S, batch, T, mixer.d_model)
    for start in range(0, T, mixer.block_size):
        stop = min(T, start + mixer.block_size)
        # the last block forms the state only when it is returned
        carry = return_state or stop < T
        block_mask = None if mask is None else mask[:, start:stop]
        if add_reversed_to is not None:
            lo, hi = T - stop, T - start
            rev = torch.arange(hi - lo - 1, -1, -1, device=xs.device)
            x_rev = torch.index_select(
                xs[:, :, lo:hi], 2, rev, out=scratch("mamba2.x_reversed", (S, batch, hi - lo, xs.shape[-1]), xs)
            )
            _, conv_ctx, ssm = _block_torch(
                mixer, params, x_rev, None, conv_ctx, ssm, out=result[:, :, lo:hi], reverse=True, carry=carry
            )
            continue
        if result is not None:
            _, conv_ctx, ssm = _block_torch(
                mixer, params, xs[:, :, start:stop], None, conv_ctx, ssm, out=result[:, :, start:stop],
                carry=carry,
            )
            continue
        if recompute:
            y, conv_ctx, ssm = checkpoint(
                _block_torch, mixer, params, xs[:, :, start:stop], block_mask, conv_ctx, ssm,
                carry=carry, use_reentrant=False,
            )
        else:
            y, conv_ctx, ssm = _block_torch(
                mixer, params, xs[:, :, start:stop], block_mask, conv_ctx, ssm, carry=carry
            )
        outputs.append(y)
    final = _final_state(mixer, S, batch, conv_ctx, ssm, xs) if return_state else None
    if result is not None:
        return result, final
    if not outputs:  # T == 0
        outputs.append(xs.new_zeros(S, batch, 0, mixer.d_model))
    y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    if mask is not None:
        y = y * mask[..., None].to(y.dtype)
    return y, final


def _final_state(mixer: Mamba2, S: int, batch: int, conv_ctx, ssm, like: torch.Tensor) -> Mamba2State:
    """The state after the last block, ``(S, B, ...)`` (zeros for an SSM that saw no frame)."""
    if ssm is None:
        ssm = like.new_zeros(S, batch, mixer.nheads, mixer.headdim, mixer.d_state)
    if conv_ctx is None:
        return Mamba2State(like.new_zeros(S, batch, mixer.conv_dim, mixer.d_conv), ssm)
    return Mamba2State(conv_ctx.transpose(-1, -2), ssm)


def _block_torch(mixer, p: _StackedParams, x, mask, conv_ctx, ssm, out=None, reverse=False, carry=True):
    """One block of ``S`` layers: in_proj, causal conv, SSD scan, gated norm, out_proj.

    ``x (S, B, T, D)``, ``mask (B, T)``, ``conv_ctx (S, B, d_conv, conv_dim)``
    and ``ssm (S, B, H, P, N)``, each None for zeros. Without autograd the output may go
    into ``out`` ``(S, B, T, D)`` (``reverse``: reversed in time and added to
    it), which is then returned. ``carry=False``: no later block or caller needs
    the states, which are then not formed (None in their place).
    """
    S, batch, T, d_model = x.shape
    # without autograd nothing keeps the in_proj output: it lives in a reused
    # buffer, and the gate may overwrite it
    own = not needs_autograd(x, *p)
    d_in_proj = p.w_in.shape[1]  # rounded up to _IN_PROJ_ALIGN: the extra features are not read
    in_buf = scratch("mamba2.in_proj", (S, batch * T, d_in_proj), x) if own else None
    zxbcdt = _batched_linear(x.reshape(S, batch * T, d_model), p.w_in, p.b_in, in_buf).view(S, batch, T, -1)
    zxbcdt = zxbcdt[..., : 2 * mixer.d_inner + 2 * mixer.ngroups * mixer.d_state + mixer.nheads]
    new_ctx = None
    if carry:
        xBC = zxbcdt[..., mixer.d_inner : mixer.d_inner + mixer.conv_dim]
        flat_mask = None if mask is None else mask.repeat(S, 1)  # (S·B, T)
        ctx = conv_ctx if conv_ctx is not None else x.new_zeros(S, batch, mixer.d_conv, mixer.conv_dim)
        new_ctx = _last_valid(ctx.flatten(0, 1), xBC.flatten(0, 1), flat_mask)
        if own:  # a view of the reused buffer: the next block would overwrite it
            new_ctx = new_ctx.clone()
        new_ctx = new_ctx.view(S, batch, *new_ctx.shape[1:])
    mix = partial(_mix_torch, mixer, mask, own, carry)
    inputs = (zxbcdt, conv_ctx, ssm, p.conv_w, p.conv_b, p.dt_bias, p.A, p.D)
    if mixer.checkpoint_scan and needs_autograd(*inputs):
        y, ssm = _RecomputedInBackward.apply(mix, *inputs)
    else:
        y, ssm = mix(*inputs)
    y = y.view(S, batch * T, mixer.d_inner)
    if out is None:
        return _batched_linear(y, p.w_out, p.b_out).view(S, batch, T, d_model), new_ctx, ssm
    if batch > 1:  # a slice of the result is not one matrix per layer
        y = _batched_linear(y, p.w_out, p.b_out).view(S, batch, T, d_model)
        return (out.add_(y.flip(2)) if reverse else out.copy_(y)), new_ctx, ssm
    target = out.view(S, T, d_model)
    if not reverse:
        _batched_linear(y, p.w_out, p.b_out, out=target)
        return out, new_ctx, ssm
    # out_proj acts frame by frame: reverse its input, accumulate into the result
    rev = torch.arange(T - 1, -1, -1, device=y.device)
    y = torch.index_select(y, 1, rev, out=scratch("mamba2.y_reversed", y.shape, y))
    if S == 1:  # as _batched_linear: a plain product for one layer
        target[0].addmm_(y[0], p.w_out[0].t())
    else:
        target.baddbmm_(y, p.w_out.transpose(1, 2))
    if p.b_out is not None:
        target.add_(p.b_out[:, None])
    return out, new_ctx, ssm


def _mix_torch(mixer, mask, own_input, carry, zxbcdt, conv_ctx, ssm, conv_w, conv_b, dt_bias, A, D):
    """Between the projections: conv, SSD scan, gated norm (less its weight) -> ``(S, B, T, d_inner)``, state.

    ``own_input``: ``zxbcdt`` is a temporary that may be overwritten. ``ssm``
    None is a zero state; ``carry=False`` returns None for the final state,
    which is then not formed. Under autocast
    (bf16 / fp16 training), and for a module itself in bf16 / fp16, this part runs in
    float32 with autocast off, as mamba_ssm's kernels keep the scan in float32 (its
    buffers are written with ``out=``): in bf16 the chunk's cumulative sum of
    ``dt * A`` alone left the output 6% and ``dt_bias``'s gradient 94% off (H100,
    T = 3,000, ``docs/bench/mixers_cuda_bf16.md``). A half-precision module gets its
    output and state back in its own dtype.
    """
    device = zxbcdt.device.type
    half = zxbcdt.dtype in (torch.float16, torch.bfloat16)
    if half or torch.is_autocast_enabled(device):
        with torch.autocast(device, enabled=False):
            tensors = [t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
                       for t in (zxbcdt, conv_ctx, ssm, conv_w, conv_b, dt_bias, A, D)]
            y, state = _mix_torch(mixer, mask, own_input, carry, *tensors)
        if not half:
            return y, state
        return y.to(zxbcdt.dtype), None if state is None else state.to((zxbcdt if ssm is None else ssm).dtype)
    S, batch, T, _ = zxbcdt.shape
    H, P, N, G = mixer.nheads, mixer.headdim, mixer.d_state, mixer.ngroups
    z, xBC, dt_raw = zxbcdt.split([mixer.d_inner, mixer.conv_dim, mixer.nheads], dim=-1)
    inplace = not needs_autograd(zxbcdt)
    conv_out = scratch("mamba2.conv", xBC.shape, xBC) if inplace else None
    xBC = _causal_depthwise_conv(conv_ctx, xBC, conv_w, conv_b, out=conv_out)
    xBC = F.silu(xBC, inplace=inplace).flatten(0, 1)  # (S·B, T, conv_dim)
    xs, B, C = xBC.split([mixer.d_inner, G * N, G * N], dim=-1)
    dt = F.softplus(dt_raw + dt_bias[:, None, None, :])
    if mixer.dt_limit != (0.0, float("inf")):
        dt = dt.clamp(*mixer.dt_limit)
    if mask is not None:
        dt = dt * mask[..., None]
    if S == 1:  # shared per-head parameters
        A, D = A[0], D[0]
    else:  # one set per sequence of the S·B batch
        A = A[:, None].expand(S, batch, H).flatten(0, 1)
        D = D[:, None].expand(S, batch, *D.shape[1:]).flatten(0, 1)
    y, ssm = ssd_chunked(
        xs.unflatten(-1, (H, P)),
        dt.flatten(0, 1),
        A,
        B.unflatten(-1, (G, N)),
        C.unflatten(-1, (G, N)),
        mixer.chunk_size,
        D=D,
        initial_state=None if ssm is None else ssm.flatten(0, 1),
        # without autograd, out_proj reads y and drops it: a reused buffer
        out=scratch("mamba2.ssd_y", (S * batch, T, H, P), zxbcdt) if own_input else None,
        final_state=carry,
    )
    y = _gate(mixer, y.view(S, batch, T, mixer.d_inner), z, inplace, own_input)
    return y, None if ssm is None else ssm.view(S, batch, H, P, N)


class _RecomputedInBackward(torch.autograd.Function):
    """``fn(*inputs)`` run without autograd (its fast in-place path), stored as
    its inputs only, and run again with autograd in the backward pass.

    Unlike ``torch.utils.checkpoint`` (non-reentrant), the forward does not
    record a graph at all; every tensor ``fn`` differentiates through must be
    among ``inputs`` (parameters included), as the recomputation sees only those.
    The recomputation runs under the autocast state of the forward (bf16 / fp16
    training: the backward pass itself runs outside autocast).
    """

    @staticmethod
    def forward(ctx, fn, *inputs):  # noqa: D102
        ctx.fn = fn
        device = next((t.device.type for t in inputs if isinstance(t, torch.Tensor)), "cpu")
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.save_for_backward(*inputs)
        return fn(*inputs)

    @staticmethod
    def backward(ctx, *grad_outputs):  # noqa: D102
        needs = ctx.needs_input_grad[1:]
        device, enabled, dtype = ctx.autocast
        with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
            inputs = [
                None if t is None else t.detach().requires_grad_(need)
                for t, need in zip(ctx.saved_tensors, needs)
            ]
            outputs = ctx.fn(*inputs)
            pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o is not None and o.requires_grad]
            wanted = [i for i, t in enumerate(inputs) if t is not None and needs[i]]
            grads = torch.autograd.grad(
                [o for o, _ in pairs], [inputs[i] for i in wanted], [g for _, g in pairs],
                allow_unused=True,
            )
        out = [None] * len(inputs)
        for i, g in zip(wanted, grads):
            out[i] = g
        return (None, *out)


def _batched_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], out: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``x (S, M, K) @ weight (S, O, K)ᵀ + bias (S, O)``: one product for all ``S`` layers (into ``out``).

    ``out`` holds the activations' dtype. Calls with ``out=`` are outside autocast
    (bf16 activations against fp32 weights would promote to fp32 and refuse a
    bf16 ``out``), so the operands are cast to ``out``'s dtype, as autocast would.
    """
    if out is not None and (x.dtype != out.dtype or weight.dtype != out.dtype):
        x, weight = x.to(out.dtype), weight.to(out.dtype)
        bias = None if bias is None else bias.to(out.dtype)
    if x.shape[0] == 1:  # one layer: a plain matrix product, faster here than bmm for small M
        # squeeze, not [0]: its backward is a view, where select's fills a zero tensor and copies
        x2, w2, o = x.squeeze(0), weight.squeeze(0), None if out is None else out.squeeze(0)
        y = torch.mm(x2, w2.t(), out=o) if bias is None else torch.addmm(bias.squeeze(0), x2, w2.t(), out=o)
        return y.unsqueeze(0) if out is None else out
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2), out=out)
    return torch.baddbmm(bias[:, None], x, weight.transpose(1, 2), out=out)


def _gate(mixer: Mamba2, y: torch.Tensor, z: torch.Tensor, inplace: bool, own_z: bool = False) -> torch.Tensor:
    """Gated RMS norm of ``y (..., d_inner)`` by ``z``, without the norm's weight.

    The arithmetic of ``RMSNormGated`` (statistics in at least fp32) less the
    final product by ``norm.weight``, which ``_stack_params`` folds into
    ``out_proj``'s columns (a ``d_model × d_inner`` product per call instead
    of a pass over the sequence). The root mean square is one ``vector_norm`` reduction, where
    ``F.rms_norm`` on CPU runs as several passes. ``own_z``: ``z`` may be overwritten.
    """
    dtype = y.dtype
    work = torch.promote_types(dtype, torch.float32)
    y, z = y.to(work), z.to(work)
    if not mixer.rmsnorm:
        return (y.mul_(F.silu(z, inplace=own_z)) if inplace else y * F.silu(z)).to(dtype)
    gate = F.silu(z, inplace=own_z)
    norm = mixer.norm
    if not norm.norm_before_gate:
        y = y.mul_(gate) if inplace else y * gate
    groups = y.unflatten(-1, (y.shape[-1] // norm.group_size, norm.group_size))
    scale = torch.linalg.vector_norm(groups, dim=-1, keepdim=True)  # (..., groups, 1)
    scale = (scale.square() / norm.group_size + norm.eps).rsqrt()
    out = (groups.mul_(scale) if inplace else groups * scale).flatten(-2)
    if norm.norm_before_gate:
        out = out.mul_(gate) if inplace else out * gate
    return out.to(dtype)


def _causal_depthwise_conv(
    ctx: Optional[torch.Tensor],
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Depthwise causal conv of ``x (..., T, C)`` preceded by ``ctx (..., K, C)`` -> ``(..., T, C)``.

    ``weight (..., C, K)`` and ``bias (..., C)`` may carry leading layer dims
    (``(S, C, K)`` for ``x (S, B, T, C)``). ``ctx`` holds the ``K = d_conv``
    previous inputs (the oldest is only kept for the state: the conv reaches
    back ``K - 1`` frames); None means zeros, whose products are skipped.
    Shifted multiply-adds in the (..., T, C) layout, without concatenating
    ``ctx`` and ``x``, run several times faster here than ``F.conv1d`` with
    its transposes. Without autograd the result goes into ``out`` when given
    (shaped as ``x``). Under autograd from a zero context, ``_ZeroStartConv``
    gives the same products and a hand-written backward pass.
    """
    if ctx is None and needs_autograd(x, weight, bias):
        bias = None if bias is None else bias.to(x.dtype)
        return _ZeroStartConv.apply(x, weight.to(x.dtype), bias)
    K, T = weight.shape[-1], x.shape[-2]
    lead = weight.shape[:-2]
    shape = (*lead, *([1] * (x.dim() - 1 - len(lead))), weight.shape[-2])
    w = [weight[..., k].to(x.dtype).reshape(shape) for k in range(K)]  # w[K-1]: current frame
    bias = None if bias is None else bias.to(x.dtype).reshape(shape)
    ctx = None if ctx is None else ctx.to(x.dtype)
    if needs_autograd(x, weight, ctx):
        # autograd: one concatenation, then out-of-place shifted products
        if ctx is None:
            padded = F.pad(x, (0, 0, K - 1, 0))  # (..., K - 1 + T, C)
        else:
            padded = torch.cat([ctx[..., 1:, :], x], dim=-2)
        y = padded[..., :T, :] * w[0] if bias is None else torch.addcmul(bias, padded[..., :T, :], w[0])
        for k in range(1, K):
            y = torch.addcmul(y, padded[..., k : k + T, :], w[k])
        return y
    y = torch.mul(x, w[K - 1], out=out) if bias is None else torch.addcmul(bias, x, w[K - 1], out=out)
    for lag in range(1, K):
        w_lag = w[K - 1 - lag]
        head = min(lag, T)  # the first frames reach back into the context
        if ctx is not None:
            y[..., :head, :].addcmul_(ctx[..., K - lag : K - lag + head, :], w_lag)
        if T > lag:
            y[..., lag:, :].addcmul_(x[..., : T - lag, :], w_lag)
    return y


class _ZeroStartConv(torch.autograd.Function):
    """``_causal_depthwise_conv`` from a zero context, with its backward pass written out.

    Autograd's own graph of the shifted multiply-adds (a padded copy, one
    ``addcmul`` per tap) spent most of its backward in zero fills of the padded
    gradient, products by the scalar ``value`` and broadcast reductions; here
    the backward is one shifted multiply-add per tap for the input and one
    product-and-sum per tap for the weight.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):  # noqa: D102
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        with torch.no_grad():
            return _causal_depthwise_conv(None, x, weight, bias)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, weight = ctx.saved_tensors
        K, T = weight.shape[-1], x.shape[-2]
        lead = weight.shape[:-2]
        shape = (*lead, *([1] * (x.dim() - 1 - len(lead))), weight.shape[-2])
        w = [weight[..., k].reshape(shape) for k in range(K)]
        reduce_dims = tuple(range(len(lead), x.dim() - 1))  # batch and time: what a weight is shared over
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # output t read input t - lag through tap K-1-lag
            grad_x = grad * w[K - 1]
            for lag in range(1, min(K, T)):
                grad_x[..., : T - lag, :].addcmul_(grad[..., lag:, :], w[K - 1 - lag])
        if ctx.needs_input_grad[1]:
            taps = []
            for k in range(K):
                lag = K - 1 - k
                part = (grad[..., lag:, :] * x[..., : T - lag, :]).sum(reduce_dims) if T > lag else None
                taps.append(part if part is not None else weight.new_zeros(weight.shape[:-1]))
            grad_w = torch.stack(taps, dim=-1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(reduce_dims)
        return grad_x, grad_w, grad_b


def _last_valid(ctx: torch.Tensor, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The ``K`` conv inputs ending at each sequence's last valid frame: ``(B, K, C)``.

    Positions index the virtual concatenation ``[ctx (K frames), x (T frames)]``.
    """
    K, T = ctx.shape[1], x.shape[1]
    if mask is None and T >= K:
        return x[:, T - K :]
    ends = torch.full((x.shape[0],), T, device=x.device) if mask is None else mask.sum(dim=1)
    idx = ends[:, None] + torch.arange(K, device=x.device)  # (B, K), in [0, K + T)
    idx = idx[..., None].expand(-1, -1, x.shape[-1])
    from_ctx = ctx.to(x.dtype).gather(1, idx.clamp(max=K - 1))
    from_x = x.gather(1, (idx - K).clamp(min=0)) if T > 0 else from_ctx
    return torch.where(idx < K, from_ctx, from_x)


# ------------------------------------------------------------ mamba_ssm path
def _mamba_ssm_ops() -> Optional[Dict[str, Callable]]:
    """The mamba_ssm kernels, imported on first use; ``None`` when unavailable."""
    try:
        from mamba_ssm.ops.triton import ssd_combined  # noqa: PLC0415
    except Exception:  # ImportError, or a broken CUDA build raising anything
        return None
    ops = {"chunk_scan": ssd_combined.mamba_chunk_scan_combined}
    # the fused conv + scan + norm + out_proj kernel calls causal_conv1d's CUDA
    # functions, which ssd_combined sets to None when causal_conv1d is missing:
    # without them the conv runs in PyTorch before the Triton scan
    if getattr(ssd_combined, "causal_conv1d_fwd_function", None) is not None:
        ops["split_conv1d_scan"] = ssd_combined.mamba_split_conv1d_scan_combined
    return ops


@lru_cache(maxsize=None)
def _log_auto_backend(device_type: str, chosen: str, fused: bool) -> None:
    """Say once per process which path ``backend="auto"`` takes for inputs on ``device_type``.

    A run's log then shows whether the kernels trained it (``bench.gpu_recipe``
    asserts it from a recipe's output).
    """
    if chosen == "mamba_ssm":
        how = "mamba_ssm kernels (" + ("fused conv + scan" if fused else "Triton scan, conv in PyTorch: no causal_conv1d") + ")"
    elif device_type == "cuda":
        how = "plain PyTorch (mamba_ssm does not import)"
    else:
        how = "plain PyTorch"
    logger.info("Mamba2 backend auto: %s inputs -> %s", device_type, how)


def _forward_mamba_ssm(
    mixer: Mamba2,
    x: torch.Tensor,
    lengths: Optional[torch.Tensor],
    state: Optional[Mamba2State],
    return_state: bool,
) -> Tuple[torch.Tensor, Optional[Mamba2State]]:
    """mamba_ssm's Triton kernels; the fused path when no padding or state is involved."""
    ops = _mamba_ssm_ops()
    if ops is None:
        raise RuntimeError(
            "Mamba2(backend='mamba_ssm'): the package 'mamba_ssm' (with its Triton "
            "kernels) could not be imported; install the 'cuda' extra "
            "(pip install mamba-ssm causal-conv1d) or use backend='torch' / 'auto'"
        )
    if not x.is_cuda:
        raise RuntimeError(
            f"Mamba2(backend='mamba_ssm'): the kernels need CUDA tensors, got x on {x.device}"
        )
    A = -torch.exp(mixer.A_log.float())
    D = mixer.D.view(mixer.nheads, mixer.headdim) if mixer.D_has_hdim else mixer.D
    limit = {} if mixer.dt_limit == (0.0, float("inf")) else {"dt_limit": mixer.dt_limit}
    fused = "split_conv1d_scan" in ops and mixer.use_mem_eff_path
    if lengths is None and state is None and not return_state and fused:
        y = ops["split_conv1d_scan"](
            mixer.in_proj(x),
            mixer.conv1d.weight[:, 0, :],
            mixer.conv1d.bias,
            mixer.dt_bias,
            A,
            D=D,
            chunk_size=mixer.chunk_size,
            activation="silu",
            rmsnorm_weight=mixer.norm.weight if mixer.rmsnorm else None,
            rmsnorm_eps=mixer.norm.eps if mixer.rmsnorm else 1e-6,
            outproj_weight=mixer.out_proj.weight,
            outproj_bias=mixer.out_proj.bias,
            headdim=None if mixer.D_has_hdim else mixer.headdim,
            ngroups=mixer.ngroups,
            norm_before_gate=mixer.norm_before_gate,
            **limit,
        )
        return y, None
    # padding or state: the conv in PyTorch (cheap), the scan in the kernel with
    # dt already masked so padded frames leave the state untouched
    batch, T, _ = x.shape
    if state is None:
        state = mixer.allocate_state(batch, device=x.device, dtype=x.dtype)
    mask = None
    if lengths is not None:
        mask = torch.arange(T, device=x.device) < lengths.to(x.device)[:, None]
        x = x * mask[..., None].to(x.dtype)
    z, xBC, dt_raw = mixer.in_proj(x).split([mixer.d_inner, mixer.conv_dim, mixer.nheads], dim=-1)
    ctx = state.conv.transpose(1, 2)
    conv_ctx = _last_valid(ctx, xBC, mask)
    xBC = F.silu(_causal_depthwise_conv(ctx, xBC, mixer.conv1d.weight[:, 0, :], mixer.conv1d.bias))
    xs, B, C = xBC.split(
        [mixer.d_inner, mixer.ngroups * mixer.d_state, mixer.ngroups * mixer.d_state], dim=-1
    )
    y, ssm = ops["chunk_scan"](
        xs.unflatten(-1, (mixer.nheads, mixer.headdim)),
        mixer._split_dt(dt_raw, mask),
        A,
        B.unflatten(-1, (mixer.ngroups, mixer.d_state)),
        C.unflatten(-1, (mixer.ngroups, mixer.d_state)),
        chunk_size=mixer.chunk_size,
        D=D,
        initial_states=state.ssm.float(),
        return_final_states=True,
    )
    y = mixer._gate_and_project(y.flatten(-2).to(x.dtype), z)
    if mask is not None:
        y = y * mask[..., None].to(y.dtype)
    return y, Mamba2State(conv_ctx.transpose(1, 2), ssm.to(x.dtype))


# backend name -> implementation; "auto" resolves to one of these per call
_BACKENDS: Dict[str, Callable] = {
    "torch": _forward_torch,
    "mamba_ssm": _forward_mamba_ssm,
}
