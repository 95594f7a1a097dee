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
Under autograd each block is checkpointed, so training memory is linear in T
with a small constant (the block inputs), at the cost of recomputing the block.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# exp() of very negative inputs produces denormals, which are 10-150x slower on
# this CPU (see PERF.md); exp(-80) ~ 1.8e-35 is already 0 for every purpose here.
_MIN_LOG_DECAY = -80.0


def _scan_block(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h: torch.Tensor,
    chunk_size: int,
    inplace: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Scan one block; ``inplace`` reuses buffers (only valid without autograd)."""
    b, T, d = x.shape
    n = A.shape[1]
    pad = (-T) % chunk_size
    if pad:
        # dt = 0 and x = 0 leave the state untouched, so padding is harmless
        x, dt, B, C = (F.pad(t, (0, 0, 0, pad)) for t in (x, dt, B, C))
    nc = (T + pad) // chunk_size
    shape = (b, nc, chunk_size, d, n)
    decay = torch.exp((dt.unsqueeze(-1) * A).clamp_(min=_MIN_LOG_DECAY)).view(shape)
    states = ((dt * x).unsqueeze(-1) * B.unsqueeze(2)).view(shape)
    if inplace:
        # local states (each chunk starting from 0) and cumulative decays
        for j in range(1, chunk_size):
            states[:, :, j].addcmul_(decay[:, :, j], states[:, :, j - 1])
            decay[:, :, j].mul_(decay[:, :, j - 1])
    else:
        local = [states[:, :, 0]]
        cum = [decay[:, :, 0]]
        for j in range(1, chunk_size):
            local.append(torch.addcmul(states[:, :, j], decay[:, :, j], local[-1]))
            cum.append(cum[-1] * decay[:, :, j])
        states = torch.stack(local, 2)
        decay = torch.stack(cum, 2)
    incoming = []
    for c in range(nc):
        incoming.append(h)
        h = torch.addcmul(states[:, c, -1], decay[:, c, -1], h)
    h_in = torch.stack(incoming, 1).unsqueeze(2)  # (b, nc, 1, d, n)
    if inplace:
        states.addcmul_(decay, h_in)
    else:
        states = torch.addcmul(states, decay, h_in)
    y = torch.einsum("bcldn,bcln->bcld", states, C.view(b, nc, chunk_size, n))
    return y.reshape(b, nc * chunk_size, d)[:, :T], h


def selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    chunk_size: int = 8,
    block_size: int = 64,
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
        Frames per block (the unit of memory and of checkpointing); rounded
        down to a multiple of ``chunk_size``.

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
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (x, dt, A, B, C, h)
    )
    ys = []
    for s in range(0, T, block):
        args = (x[:, s : s + block], dt[:, s : s + block], A, B[:, s : s + block], C[:, s : s + block], h)
        if needs_grad:
            y, h = checkpoint(_scan_block, *args, chunk_size, False, use_reentrant=False)
        else:
            y, h = _scan_block(*args, chunk_size, True)
        ys.append(y)
    if not ys:
        return x.new_zeros(b, 0, d), h
    return torch.cat(ys, 1), h
