"""Plain-PyTorch selective scan (the SSM of Mamba v1), chunked for CPU speed.

The recurrence, per channel ``d`` and state ``n``::

    h[t] = exp(dt[t, d] * A[d, n]) * h[t-1] + dt[t, d] * x[t, d] * B[t, n]
    y[t, d] = sum_n C[t, n] * h[t, d, n]

A Python loop over every frame is slow, and the full ``(T, D, N)`` tensors of
the reference implementation are large. Here time is cut into blocks of
``block_size`` frames (memory stays at one block's worth, with the state
carried between blocks), each block into chunks of ``chunk_size`` frames: the
recurrence runs inside all chunks of a block at once (``chunk_size`` vectorised
steps), chunk-end states are carried sequentially between chunks, and each
frame then adds its chunk's incoming state times the cumulative decay.
Both directions are done in place where autograd would otherwise hold every
intermediate: the backward pass is hand-written (a reverse scan of the adjoint,
block by block, recomputing each block's states from the one state saved per
block), so training memory is linear in T with a small constant.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from speechbrain_cald.nnet.ssd import needs_autograd

# Decays below exp(-60) ~ 1e-26 are 0 for every purpose here, but letting them
# (or products with them) reach the denormal range makes exp() and mul 3-150x
# slower on this CPU (PERF.md): decays and cumulative decays are clamped to it.
_MIN_LOG_DECAY = -60.0


def _exp_decay(dt: torch.Tensor, A: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``exp(dt A)``, clamped: ``dt (B, T, D)``, ``A (D, N)`` -> ``(B, T, D, N)``."""
    out = torch.mul(dt.unsqueeze(-1), A, out=out)
    return out.clamp_(min=_MIN_LOG_DECAY).exp_()


def _chunk_cumsum(dt: torch.Tensor, chunk_size: int, reverse: bool = False) -> torch.Tensor:
    """Cumulative sum of ``dt (B, T, D)`` inside each chunk (from its end if ``reverse``)."""
    b, T, d = dt.shape
    per_chunk = dt.view(b, T // chunk_size, chunk_size, d)
    if reverse:
        return per_chunk.flip(2).cumsum(2).flip(2).reshape(b, T, d)
    return per_chunk.cumsum(2).reshape(b, T, d)


def _linear_scan(
    decay: torch.Tensor,
    cum: torch.Tensor,
    states: torch.Tensor,
    h: torch.Tensor,
    chunk_size: int,
    reverse: bool = False,
) -> torch.Tensor:
    """In place: ``states[t] <- decay[t] * states[t -/+ 1] + states[t]``, chunked.

    All tensors are ``(B, T, D, N)`` with T a multiple of ``chunk_size``;
    ``cum`` holds the decays accumulated from the start of each chunk (from
    its end if ``reverse``). ``h`` enters before the first frame (after the last
    one if ``reverse``). Returns the state at the far end.
    """
    b, T, d, n = states.shape
    nc = T // chunk_size
    decay = decay.view(b, nc, chunk_size, d, n)
    cum = cum.view(b, nc, chunk_size, d, n)
    local = states.view(b, nc, chunk_size, d, n)
    # 1) every chunk from a zero state, all chunks at once
    offset = 1 if reverse else -1
    for j in range(chunk_size - 2, -1, -1) if reverse else range(1, chunk_size):
        local[:, :, j].addcmul_(decay[:, :, j], local[:, :, j + offset])
    # 2) the state entering each chunk, sequentially over chunks
    edge = 0 if reverse else chunk_size - 1
    incoming = states.new_empty(b, nc, d, n)
    for c in range(nc - 1, -1, -1) if reverse else range(nc):
        incoming[:, c] = h
        h = torch.addcmul(local[:, c, edge], cum[:, c, edge], h)
    # 3) each frame adds the entering state, decayed
    local.addcmul_(cum, incoming.unsqueeze(2))
    return h


def _pad_time(t: torch.Tensor, pad: int) -> torch.Tensor:
    # dt = 0 and x = 0 leave the state untouched, so padding is harmless
    return F.pad(t, (0, 0, 0, pad)) if pad else t


def _scan_forward(x, dt, A, B, C, h, chunk_size, block):
    """No-grad scan; also returns the state entering each block (for backward).

    Block-sized buffers are reused for every block: reallocating them costs
    page faults that are a large share of the time on CPU (PERF.md).
    """
    b, T, d = x.shape
    n = A.shape[1]
    y = x.new_empty(b, T, d)
    width = min(block, T + (-T) % chunk_size)
    buffers = x.new_empty(3, b, width, d, n)
    starts = []
    for s in range(0, T, block):
        starts.append(h)
        Tb = min(block, T - s)
        pad = (-Tb) % chunk_size
        dtb, xb, Bb = (_pad_time(t[:, s : s + Tb], pad) for t in (dt, x, B))
        decay, cum, states = buffers[:, :, : Tb + pad].unbind(0)
        _exp_decay(dtb, A, out=decay)
        _exp_decay(_chunk_cumsum(dtb, chunk_size), A, out=cum)
        torch.mul((dtb * xb).unsqueeze(-1), Bb.unsqueeze(2), out=states)
        h = _linear_scan(decay, cum, states, h, chunk_size)
        y[:, s : s + Tb] = torch.matmul(states[:, :Tb], C[:, s : s + Tb].unsqueeze(-1)).squeeze(-1)
    return y, h, starts


class _SelectiveScan(torch.autograd.Function):
    """Selective scan with a hand-written backward: a reverse scan of the adjoint.

    Only the inputs and one state per block are saved; each block is recomputed
    in backward, so memory stays linear in T with a small constant.
    """

    @staticmethod
    def forward(ctx, x, dt, A, B, C, h0, chunk_size, block):
        with torch.no_grad():
            y, h, starts = _scan_forward(x, dt, A, B, C, h0, chunk_size, block)
        ctx.save_for_backward(x, dt, A, B, C, *starts)
        ctx.chunk_size, ctx.block = chunk_size, block
        return y, h

    @staticmethod
    def backward(ctx, gy, gh):
        x, dt, A, B, C, *starts = ctx.saved_tensors
        chunk_size, block = ctx.chunk_size, ctx.block
        b, T, d = x.shape
        n = A.shape[1]
        carry = torch.zeros_like(starts[0]) if gh is None else gh.clone()
        if gy is None:
            gy = torch.zeros_like(x)
        gx, gdt = torch.empty_like(x), torch.empty_like(dt)
        gB, gC = torch.empty_like(B), torch.empty_like(C)
        gA = torch.zeros_like(A)
        # block-sized buffers, reused (see _scan_forward)
        width = min(block, T + (-T) % chunk_size)
        buffers = x.new_empty(5, b, width, d, n)
        for index in range(len(starts) - 1, -1, -1):
            s = index * block
            Tb = min(block, T - s)
            pad = (-Tb) % chunk_size
            xb, dtb, Bb, Cb, gyb = (_pad_time(t[:, s : s + Tb], pad) for t in (x, dt, B, C, gy))
            decay, cum, states, before, lam = buffers[:, :, : Tb + pad].unbind(0)
            # recompute the states h[t] of this block, and h[t-1] beside them
            h_start = starts[index]
            _exp_decay(dtb, A, out=decay)
            _exp_decay(_chunk_cumsum(dtb, chunk_size), A, out=cum)
            dtx = dtb * xb
            torch.mul(dtx.unsqueeze(-1), Bb.unsqueeze(2), out=states)
            _linear_scan(decay, cum, states, h_start, chunk_size)
            before[:, 0] = h_start
            before[:, 1:] = states[:, :-1]
            before.mul_(decay)  # d h[t] / d(dt A)[t] = decay[t] h[t-1]
            first_decay = decay[:, 0].clone()
            # adjoint lam[t] = dL/dh[t] = C[t] gy[t] + decay[t+1] lam[t+1], a reverse scan
            torch.mul(gyb.unsqueeze(-1), Cb.unsqueeze(2), out=lam)
            dt_next = F.pad(dtb[:, 1:], (0, 0, 0, 1))  # the carry enters undecayed
            _exp_decay(dt_next, A, out=decay)
            _exp_decay(_chunk_cumsum(dt_next, chunk_size, reverse=True), A, out=cum)
            _linear_scan(decay, cum, lam, carry, chunk_size, reverse=True)
            carry = first_decay * lam[:, 0]  # dL/d(state entering this block)
            # y = C . h  and  h = decay h[t-1] + dt x B
            gC[:, s : s + Tb] = torch.matmul(gyb.unsqueeze(-2), states).squeeze(-2)[:, :Tb]
            g_dtx = torch.matmul(lam, Bb.unsqueeze(-1)).squeeze(-1)
            gB[:, s : s + Tb] = torch.matmul(dtx.unsqueeze(-2), lam).squeeze(-2)[:, :Tb]
            g_log_decay = before.mul_(lam)  # dL/d(dt A)
            gA += torch.mul(g_log_decay, dtb.unsqueeze(-1), out=decay).sum((0, 1))
            g_dt = torch.mul(g_log_decay, A, out=cum).sum(-1)
            gx[:, s : s + Tb] = (g_dtx * dtb)[:, :Tb]
            gdt[:, s : s + Tb] = (g_dt + g_dtx * xb)[:, :Tb]
        return gx, gdt, gA, gB, gC, carry, None, None


def selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    chunk_size: int = 8,
    block_size: int = 32,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run the selective-scan recurrence over time, chunked.

    Arguments
    ---------
    x : torch.Tensor
        Inputs ``(B, T, D)``.
    dt : torch.Tensor
        Step sizes ``(B, T, D)``, already positive (after softplus); a frame
        with ``dt = 0`` leaves the state unchanged (used for padding).
    A : torch.Tensor
        Continuous-time decay rates ``(D, N)`` (negative).
    B : torch.Tensor
        Input matrices ``(B, T, N)``.
    C : torch.Tensor
        Output matrices ``(B, T, N)``.
    initial_state : torch.Tensor, optional
        State ``(B, D, N)`` before the first frame; zeros if None.
    chunk_size : int
        Frames per chunk (the vectorised inner recurrence).
    block_size : int
        Frames per block (the unit of memory and of recomputation in
        backward); rounded down to a multiple of ``chunk_size``.

    Returns
    -------
    y : torch.Tensor
        ``(B, T, D)``: ``C[t] . h[t]`` (no skip connection, no gate), in the
        computation dtype (float32, or float64 for float64 inputs).
    final_state : torch.Tensor
        ``(B, D, N)``: the state after the last frame.

    Example
    -------
    >>> x, dt = torch.randn(2, 10, 3), torch.rand(2, 10, 3)
    >>> A = -torch.rand(3, 4)
    >>> B, C = torch.randn(2, 10, 4), torch.randn(2, 10, 4)
    >>> y, h = selective_scan(x, dt, A, B, C, chunk_size=4)
    >>> y.shape, h.shape
    (torch.Size([2, 10, 3]), torch.Size([2, 3, 4]))
    """
    if x.dim() != 3:
        raise ValueError(f"selective_scan: x must be (B, T, D), found shape {tuple(x.shape)}")
    b, T, d = x.shape
    n = A.shape[-1]
    expected = {"dt": (dt, (b, T, d)), "A": (A, (d, n)), "B": (B, (b, T, n)), "C": (C, (b, T, n))}
    if initial_state is not None:
        expected["initial_state"] = (initial_state, (b, d, n))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"selective_scan: {name} must have shape {shape} for x {tuple(x.shape)}, "
                f"found {tuple(tensor.shape)}"
            )
    if chunk_size < 1:
        raise ValueError(f"selective_scan: chunk_size must be >= 1, found {chunk_size}")
    dtype = torch.promote_types(x.dtype, torch.float32)
    x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    if initial_state is None:
        h = x.new_zeros(b, d, n)
    else:
        h = initial_state.to(dtype)
    block = max(chunk_size, (block_size // chunk_size) * chunk_size)
    needs_grad = needs_autograd(x, dt, A, B, C, h)
    if T == 0:
        return x.new_zeros(b, 0, d), h
    if needs_grad:
        return _SelectiveScan.apply(x, dt, A, B, C, h, chunk_size, block)
    y, h, _ = _scan_forward(x, dt, A, B, C, h, chunk_size, block)
    return y, h
