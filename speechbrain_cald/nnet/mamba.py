"""Mamba (v1, selective scan) token mixer with a fast plain-PyTorch path.

Parameters, their names, shapes and initialisation are those of
``mamba_ssm.Mamba`` (and of transformers' ``MambaMixer``), so state_dicts load
strictly in both directions. The forward pass adds what the reference lacks:
right-padded batches with ``lengths`` (padded frames give 0 and never touch
the state) and an explicit state in / state out, so a long recording can be
processed piece by piece with the result of one pass.

Backends (``backend=``):

- ``"torch"``: plain PyTorch on any device (:func:`selective_scan`, chunked).
- ``"mamba_ssm"``: the CUDA kernels of ``mamba_ssm`` (``selective_scan_fn``)
  and ``causal_conv1d``; imported lazily, only when first used.
- ``"auto"``: the kernels when the input is on CUDA and they import, else torch.

The kernel does not take an initial SSM state, so a call with ``state=`` runs
the scan in PyTorch on whatever device the input is on.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from speechbrain_cald.nnet.selective_scan import _MIN_LOG_DECAY, selective_scan


class MambaState(NamedTuple):
    """Recurrent state of :class:`Mamba` between two calls.

    Arguments
    ---------
    conv : torch.Tensor
        ``(B, d_inner, d_conv)``: the last ``d_conv`` inputs of the depthwise
        convolution (the layout of ``mamba_ssm``'s inference cache).
    ssm : torch.Tensor
        ``(B, d_inner, d_state)``: the SSM state after the last valid frame.

    Example
    -------
    >>> _, state = Mamba(d_model=8, d_state=4)(torch.randn(2, 5, 8), return_state=True)
    >>> state.conv.shape, state.ssm.shape
    (torch.Size([2, 16, 4]), torch.Size([2, 16, 4]))
    """

    conv: torch.Tensor
    ssm: torch.Tensor


def _scan_torch(mixer: "Mamba", x, dt, A, B, C, h0):
    return selective_scan(
        x, dt, A, B, C, initial_state=h0, chunk_size=mixer.chunk_size, block_size=mixer.block_size
    )


def _scan_mamba_ssm(mixer: "Mamba", x, dt, A, B, C, h0):
    if h0 is not None:
        # the kernel always starts from a zero state
        return _scan_torch(mixer, x, dt, A, B, C, h0)
    scan_fn = _load_kernels()[0]
    y, last = scan_fn(
        x.transpose(1, 2).contiguous(),
        # the kernel wants delta, B and C in the input's dtype, A in fp32
        dt.to(x.dtype).transpose(1, 2).contiguous(),
        A.float().contiguous(),
        B.to(x.dtype).transpose(1, 2).contiguous(),
        C.to(x.dtype).transpose(1, 2).contiguous(),
        None,
        z=None,
        delta_bias=None,
        delta_softplus=False,
        return_last_state=True,
    )
    return y.transpose(1, 2), last


_KERNELS: Dict[str, object] = {}


def _load_kernels() -> Tuple[Callable, Optional[Callable]]:
    """Import mamba_ssm's scan and causal_conv1d (optional) on first use."""
    if "scan" not in _KERNELS:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        _KERNELS["scan"] = selective_scan_fn
        try:
            from causal_conv1d import causal_conv1d_fn
        except ImportError:
            causal_conv1d_fn = None
        _KERNELS["conv"] = causal_conv1d_fn
    return _KERNELS["scan"], _KERNELS["conv"]


def _kernels_available() -> bool:
    # failed imports are not cached by Python; remember the answer ourselves
    if "available" not in _KERNELS:
        try:
            _load_kernels()
            _KERNELS["available"] = True
        except ImportError:
            _KERNELS["available"] = False
    return _KERNELS["available"]


# backend name -> scan implementation; "auto" is resolved per call
_SCANS: Dict[str, Callable] = {"torch": _scan_torch, "mamba_ssm": _scan_mamba_ssm}
BACKENDS = ("auto", *_SCANS)


class Mamba(nn.Module):
    """Mamba (v1) selective-state-space token mixer, mamba_ssm-compatible.

    Arguments
    ---------
    d_model : int
        Feature size D of the input and output.
    d_state : int
        SSM state size N per channel.
    d_conv : int
        Kernel size of the causal depthwise convolution.
    expand : int
        ``d_inner = expand * d_model``.
    dt_rank : int or "auto"
        Rank of the step-size projection; ``"auto"`` is ``ceil(d_model / 16)``.
    dt_min, dt_max : float
        Range of the initial step sizes (log-uniform).
    dt_init : str
        ``"random"`` (uniform) or ``"constant"`` init of ``dt_proj.weight``.
    dt_scale : float
        Scale of the ``dt_proj.weight`` init.
    dt_init_floor : float
        Lower bound of the initial step sizes.
    conv_bias : bool
        Bias in the depthwise convolution.
    bias : bool
        Bias in ``in_proj`` and ``out_proj``.
    backend : str
        ``"auto"``, ``"torch"`` or ``"mamba_ssm"`` (see module docstring).
    chunk_size : int
        Frames per chunk of the plain-PyTorch scan (CPU speed knob).
    block_size : int
        Frames per block of the plain-PyTorch scan (memory / checkpoint unit).
    device, dtype
        Factory arguments for the parameters (``A_log`` and ``D`` stay fp32,
        as in mamba_ssm).

    Example
    -------
    >>> mixer = Mamba(d_model=16, d_state=4)
    >>> x = torch.randn(2, 10, 16)
    >>> y = mixer(x, lengths=torch.tensor([10, 6]))
    >>> y.shape, bool((y[1, 6:] == 0).all())
    (torch.Size([2, 10, 16]), True)
    >>> y1, state = mixer(x[:, :4], return_state=True)
    >>> y2 = mixer(x[:, 4:], state=state)
    >>> y = mixer(x)  # the same up to rounding (other shapes, other chunk boundaries):
    >>> bool((torch.cat([y1, y2], 1) - y).abs().max() <= 512 * torch.finfo(y.dtype).eps * y.abs().max())
    True
    """

    #: output at t reads frames <= t only: a causal LM's mixer, or one direction of BiMamba2
    causal = True

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: Union[int, str] = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        backend: str = "auto",
        device=None,
        dtype=None,
        chunk_size: int = 8,
        block_size: int = 32,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"Mamba: unknown backend '{backend}', expected one of {BACKENDS}")
        if dt_init not in _DT_INITS:
            raise ValueError(f"Mamba: unknown dt_init '{dt_init}', expected one of {sorted(_DT_INITS)}")
        if chunk_size < 1 or block_size < 1:
            raise ValueError(
                f"Mamba: chunk_size and block_size must be >= 1, found {chunk_size}, {block_size}"
            )
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.backend = backend
        self.chunk_size = chunk_size
        self.block_size = block_size

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=conv_bias,
            **factory,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
        # S4D-real init: A[d, n] = -(n + 1), stored as log; kept in fp32
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)
        self._init_dt(dt_init, dt_scale, dt_min, dt_max, dt_init_floor)

    @torch.no_grad()
    def _init_dt(self, dt_init, dt_scale, dt_min, dt_max, dt_init_floor) -> None:
        # keeps the variance of dt_proj's output at init, as in mamba_ssm
        std = self.dt_rank**-0.5 * dt_scale
        _DT_INITS[dt_init](self.dt_proj.weight, std)
        # bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max]
        log_dt = torch.rand(self.d_inner, device=self.dt_proj.bias.device) * (
            math.log(dt_max) - math.log(dt_min)
        ) + math.log(dt_min)
        dt = torch.exp(log_dt).clamp(min=dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True

    def _resolve_backend(self, x: torch.Tensor) -> str:
        if self.backend == "auto":
            return "mamba_ssm" if x.is_cuda and _kernels_available() else "torch"
        if self.backend == "mamba_ssm":
            if not x.is_cuda:
                raise RuntimeError(
                    f"Mamba: backend='mamba_ssm' needs a CUDA input, found x on {x.device}; "
                    "use backend='auto' or 'torch'"
                )
            try:
                _load_kernels()
            except ImportError as err:
                raise ImportError(
                    "Mamba: backend='mamba_ssm' needs the mamba_ssm package "
                    "(pip install speechbrain-cald[cuda]); use backend='torch' without it"
                ) from err
        return self.backend

    def _check_inputs(self, x, lengths, state) -> None:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"Mamba: x must be (B, T, {self.d_model}), found shape {tuple(x.shape)}"
            )
        b, T = x.shape[:2]
        if lengths is not None:
            if lengths.is_floating_point():
                raise ValueError(
                    f"Mamba: lengths must be absolute frame counts (an integer tensor), found "
                    f"{lengths.dtype}; convert relative lengths with torch.round(rel * T).long()"
                )
            if lengths.shape != (b,):
                raise ValueError(
                    f"Mamba: lengths must be ({b},) for x {tuple(x.shape)}, "
                    f"found {tuple(lengths.shape)}"
                )
            if bool((lengths < 0).any()) or bool((lengths > T).any()):
                raise ValueError(
                    f"Mamba: lengths must lie in [0, {T}] (absolute frames), found {lengths.tolist()}"
                )
        if state is not None:
            conv, ssm = state
            want = {
                "state.conv": (conv, (b, self.d_inner, self.d_conv)),
                "state.ssm": (ssm, (b, self.d_inner, self.d_state)),
            }
            for name, (tensor, shape) in want.items():
                if tuple(tensor.shape) != shape:
                    raise ValueError(
                        f"Mamba: {name} must have shape {shape}, found {tuple(tensor.shape)}"
                    )

    def _zero_state(self, x: torch.Tensor) -> MambaState:
        b = x.shape[0]
        conv = x.new_zeros(b, self.d_inner, self.d_conv)
        ssm = x.new_zeros(b, self.d_inner, self.d_state, dtype=torch.promote_types(x.dtype, torch.float32))
        return MambaState(conv, ssm)

    def _conv(self, xi: torch.Tensor, state: Optional[MambaState], backend: str) -> torch.Tensor:
        """Causal depthwise conv + SiLU of ``xi (B, T, d_inner)``."""
        weight = self.conv1d.weight
        if state is None:
            conv_fn = _load_kernels()[1] if backend == "mamba_ssm" else None
            if conv_fn is not None:
                out = conv_fn(
                    xi.transpose(1, 2).contiguous(), weight.squeeze(1), self.conv1d.bias, activation="silu"
                )
                return out.transpose(1, 2)
            history = xi.new_zeros(xi.shape[0], self.d_conv - 1, self.d_inner)
        else:
            history = state.conv[..., 1:].transpose(1, 2).to(xi.dtype)
        full = torch.cat([history, xi], 1).transpose(1, 2)
        out = F.conv1d(full, weight, self.conv1d.bias, groups=self.d_inner)
        return F.silu(out).transpose(1, 2)

    def _next_conv_state(self, xi, lengths, state) -> torch.Tensor:
        """The last ``d_conv`` inputs up to each sequence's valid end."""
        b, T, _ = xi.shape
        if state is None:
            history = xi.new_zeros(b, self.d_conv, self.d_inner)
        else:
            history = state.conv.transpose(1, 2).to(xi.dtype)
        full = torch.cat([history, xi], 1)  # (B, d_conv + T, d_inner)
        ends = torch.full((b,), T, device=xi.device) if lengths is None else lengths.to(xi.device)
        index = ends[:, None] + torch.arange(self.d_conv, device=xi.device)
        window = torch.gather(full, 1, index[..., None].expand(-1, -1, self.d_inner))
        return window.transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        lengths: Optional[torch.Tensor] = None,
        state: Optional[MambaState] = None,
        return_state: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, MambaState]]:
        """Mix ``x`` causally over time.

        Arguments
        ---------
        x : torch.Tensor
            ``(B, T, D)`` right-padded inputs.
        lengths : torch.Tensor, optional
            ``(B,)`` absolute valid frame counts; None means all T frames valid.
        state : MambaState, optional
            State returned by a previous call (the frames before ``x``).
        return_state : bool
            Also return the state after each sequence's last valid frame.

        Returns
        -------
        y : torch.Tensor
            ``(B, T, D)``, 0 at padded frames.
        state : MambaState
            Only if ``return_state``.
        """
        self._check_inputs(x, lengths, state)
        backend = self._resolve_backend(x)
        T = x.shape[1]
        if T == 0:
            # an empty piece of a stream: nothing to mix, the state passes through
            if not return_state:
                return x.clone()
            return x.clone(), state if state is not None else self._zero_state(x)
        mask = None
        if lengths is not None:
            mask = (torch.arange(T, device=x.device) < lengths.to(x.device)[:, None]).unsqueeze(-1)
        xi, z = self.in_proj(x).chunk(2, dim=-1)
        if mask is not None:
            xi = xi * mask  # the conv state is built from valid frames only
        xc = self._conv(xi, state, backend)
        dt, B, C = torch.split(self.x_proj(xc), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        compute = torch.promote_types(x.dtype, torch.float32)
        dt = F.softplus(F.linear(dt, self.dt_proj.weight).to(compute) + self.dt_proj.bias.to(compute))
        if mask is not None:
            dt = dt * mask  # dt = 0: padded frames leave the SSM state unchanged
        A = -torch.exp(self.A_log.to(compute))
        h0 = None if state is None else state.ssm
        y, h = _SCANS[backend](self, xc, dt, A, B, C, h0)
        y = (y + xc.to(compute) * self.D.to(compute)) * F.silu(z.to(compute))
        out = self.out_proj(y.to(x.dtype))
        if mask is not None:
            out = out * mask
        if not return_state:
            return out
        return out, MambaState(self._next_conv_state(xi, lengths, state), h)

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> MambaState:
        """A zero state (nothing seen yet) for ``batch_size`` sequences."""
        ref = self.in_proj.weight
        x = torch.empty(batch_size, 0, self.d_model, device=device or ref.device, dtype=dtype or ref.dtype)
        return self._zero_state(x)

    def step(self, x: torch.Tensor, state: MambaState) -> Tuple[torch.Tensor, MambaState]:
        """One recurrent step: the output for one new frame and the next state.

        The constant-cost decoding path (autoregressive generation): no chunked
        scan, no time dimension, the same arithmetic as :meth:`forward` on one
        frame with ``state=`` (``forward(x[:, None], state=s, return_state=True)``).

        Arguments
        ---------
        x : torch.Tensor
            ``(B, D)``: one frame per sequence.
        state : MambaState
            The state after the previous frames (:meth:`allocate_state` for none).

        Returns
        -------
        y : torch.Tensor
            ``(B, D)``.
        state : MambaState
            The state after ``x``.

        Example
        -------
        >>> mixer = Mamba(d_model=8, d_state=4)
        >>> x = torch.randn(2, 6, 8)
        >>> y, state = mixer(x[:, :5], return_state=True)
        >>> y6, _ = mixer.step(x[:, 5], state)
        >>> full = mixer(x)[:, 5]  # one recurrent step vs the scan: the same sums in another order
        >>> bool((y6 - full).abs().max() <= 512 * torch.finfo(full.dtype).eps * full.abs().max())
        True
        """
        if x.dim() != 2 or x.shape[-1] != self.d_model:
            raise ValueError(f"Mamba.step: x must be (B, {self.d_model}), found shape {tuple(x.shape)}")
        self._check_inputs(x[:, None], None, state)
        # as few operations as possible: at one frame each costs more in overhead than in arithmetic
        compute = torch.promote_types(x.dtype, torch.float32)
        xi, z = self.in_proj(x).chunk(2, dim=-1)  # (B, d_inner) each
        window = torch.cat([state.conv[..., 1:].to(xi.dtype), xi.unsqueeze(-1)], dim=-1)  # (B, d_inner, d_conv)
        xc = torch.linalg.vecdot(window, self.conv1d.weight.squeeze(1))
        xc = F.silu(xc if self.conv1d.bias is None else xc + self.conv1d.bias)
        dt, B, C = torch.split(self.x_proj(xc).to(compute), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(F.linear(dt, self.dt_proj.weight.to(compute), self.dt_proj.bias.to(compute)))
        xc = xc.to(compute)
        # the same clamp as the chunked scan (decays below exp(-60) are 0 for every purpose)
        decay = (dt.unsqueeze(-1) * -torch.exp(self.A_log.to(compute))).clamp_(min=_MIN_LOG_DECAY).exp_()
        h = torch.addcmul(state.ssm.to(compute) * decay, (dt * xc).unsqueeze(-1), B.unsqueeze(1))  # (B, d_inner, N)
        y = torch.addcmul(torch.bmm(h, C.unsqueeze(-1)).squeeze(-1), xc, self.D.to(compute))
        y = y * F.silu(z.to(compute))
        return self.out_proj(y.to(x.dtype)), MambaState(window.to(state.conv.dtype), h)


def _uniform_init(weight: torch.Tensor, std: float) -> None:
    nn.init.uniform_(weight, -std, std)


def _constant_init(weight: torch.Tensor, std: float) -> None:
    nn.init.constant_(weight, std)


_DT_INITS: Dict[str, Callable[[torch.Tensor, float], None]] = {
    "random": _uniform_init,
    "constant": _constant_init,
}
