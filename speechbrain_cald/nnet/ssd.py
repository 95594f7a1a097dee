"""Chunked state-space duality (SSD) scan of Mamba2 in plain PyTorch.

The recurrence, per batch element, head ``h`` (group ``g(h)``) and step ``t``::

    s_t = exp(dt_t[h] * A[h]) * s_{t-1} + dt_t[h] * x_t[h] ⊗ B_t[g]     (P × N)
    y_t[h] = s_t @ C_t[g] + D[h] * x_t[h]

is evaluated chunk by chunk: inside a chunk of ``L`` frames as a masked
``L × L`` product (quadratic in ``L`` only), between chunks by carrying the
``(H, P, N)`` state, so time and memory grow linearly with ``T``.

Choices made for speed on CPU (see ``/work/shared/PERF.md``):

- ``C·Bᵀ`` is computed once per group, not once per head;
- chunk states and their read-out are single matmuls over all heads of a group
  (``(H·P × L) @ (L × N)`` and ``(L × N) @ (N × H·P)``);
- every exponent is clamped to ``[-60, 0]`` before ``exp``: ``-inf`` or denormal
  results make ``torch.exp`` 10-150x slower here, and ``exp(-60)`` is already
  below any fp32 output's resolution (the state carried across chunks drops
  such terms to exact zeros, as denormal products slow the matmul too);
- without autograd, ``dt`` is folded into ``x`` once and the state between
  chunks is carried by one in-place ``addcmul_`` per chunk in a single buffer
  (``_carry_states_inplace``); under autograd, whose backward of such a loop
  costs several ops per chunk, by one decay-matrix product per block
  (``_carry_states``), quadratic only in the chunks of one call;
- without autograd, the big temporaries live in per-thread buffers kept
  between calls (``scratch``): freshly allocated ones were page-faulted in
  again by every call; ``release_scratch()`` hands them back.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Optional, Sequence, Tuple

import torch

# exp(-60) ~ 8.8e-27: far below any fp32 output's resolution, yet far enough above
# fp32's denormal range (< 1.2e-38) that neither exp nor the products that
# follow it hit the slow denormal paths of this CPU
_EXP_FLOOR = -60.0

# scratch buffers per thread: name -> flat tensor (see `scratch`)
_SCRATCH = threading.local()
# larger requests get fresh memory: the workspace never holds more than a few of these
_SCRATCH_MAX_BYTES = 64 * 2**20


def scratch(name: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised ``shape`` tensor whose memory is kept for the next call.

    For the temporaries of the no-autograd path only: a view handed out under
    ``name`` is overwritten by the next request for ``name`` (in this thread),
    so it must not outlive the function that asked for it. One flat CPU buffer
    per name, dtype and thread, grown as needed, each at most
    ``_SCRATCH_MAX_BYTES`` (larger requests, and other devices, get fresh
    memory). Why: glibc returns freed large blocks to the system and each call
    then page-faults them in again; on the 2-core machine of PERF.md that was
    8-30k faults (~0.8 us each) per BiMamba2 forward at T = 3000, and a
    different count in each process.

    Arguments
    ---------
    name : str
        Who uses the buffer; views of one name must not be alive at once.
    shape : sequence of int
        Shape of the returned (contiguous) tensor.
    like : torch.Tensor
        Gives the dtype and device.

    Returns
    -------
    torch.Tensor
        ``shape``, contents undefined.

    Example
    -------
    >>> a = scratch("doc", (2, 3), torch.zeros(1))
    >>> b = scratch("doc", (3,), torch.zeros(1))
    >>> a.shape, b.data_ptr() == a.data_ptr()
    (torch.Size([2, 3]), True)
    """
    numel = math.prod(shape)
    if like.device.type != "cpu" or numel * like.element_size() > _SCRATCH_MAX_BYTES:
        return like.new_empty(shape)
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        buffers = _SCRATCH.buffers = {}
    key = (name, like.dtype)
    flat = buffers.get(key)
    if flat is None or flat.numel() < numel:
        with torch.inference_mode(False):  # usable both inside and outside inference mode
            flat = buffers[key] = like.new_empty(numel)
    return flat[:numel].view(shape)


def release_scratch() -> int:
    """Free this thread's scratch buffers (they are otherwise kept for the next call).

    The plain Mamba2 / BiMamba2 inference path keeps about 130 MB per thread
    for batch 1 with 3072-frame blocks (each buffer capped at
    ``_SCRATCH_MAX_BYTES``); call this after a long-audio job to hand the memory
    back. The next call allocates them again.

    Returns
    -------
    int
        Bytes released.

    Example
    -------
    >>> _ = scratch("doc.release", (1000,), torch.zeros(1))
    >>> release_scratch() >= 4000
    True
    >>> release_scratch()
    0
    """
    buffers = getattr(_SCRATCH, "buffers", None) or {}
    freed = sum(t.numel() * t.element_size() for t in buffers.values())
    _SCRATCH.buffers = {}
    return freed


def ssd_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: Optional[torch.Tensor] = None,
    initial_state: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    final_state: bool = True,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Run the SSD recurrence over ``T`` frames, chunk by chunk.

    Arguments
    ---------
    x : torch.Tensor
        Inputs ``(B, T, H, P)``.
    dt : torch.Tensor
        Discretisation steps ``(B, T, H)``, already ``softplus``-ed and
        clamped; 0 leaves the state untouched (padding).
    A : torch.Tensor
        Continuous decay rates ``(H,)``, negative; or ``(B, H)``, one set per
        sequence (BiMamba2 runs its two directions as one batch of ``2B``).
    B : torch.Tensor
        Input matrices ``(B, T, G, N)``; ``H`` must be a multiple of ``G``.
    C : torch.Tensor
        Output matrices ``(B, T, G, N)``.
    chunk_size : int
        Frames per chunk ``L``; ``T`` need not be a multiple of it.
    D : torch.Tensor, optional
        Skip weights ``(H,)`` or ``(H, P)``; with a leading batch dimension
        (``(B, H)`` or ``(B, H, P)``) when ``A`` has one.
    initial_state : torch.Tensor, optional
        State ``(B, H, P, N)`` before the first frame; zeros if ``None``.
    out : torch.Tensor, optional
        Contiguous ``(B, T, H, P)`` that receives ``y`` (without autograd only).
    final_state : bool
        Compute the state after the last frame. ``False`` returns ``None`` in
        its place and skips work no output needs: with no ``initial_state``
        and ``T <= chunk_size`` no state is formed at all, only the products
        inside the chunk (what short sequences spend most of their scan on).

    Returns
    -------
    y : torch.Tensor
        Outputs ``(B, T, H, P)`` (``out`` when given).
    final_state : torch.Tensor or None
        State ``(B, H, P, N)`` after the last frame; ``None`` if not ``final_state``.

    Example
    -------
    >>> x = torch.randn(2, 10, 4, 3)
    >>> dt = torch.rand(2, 10, 4)
    >>> A = -torch.rand(4)
    >>> B, C = torch.randn(2, 10, 1, 5), torch.randn(2, 10, 1, 5)
    >>> y, s = ssd_chunked(x, dt, A, B, C, chunk_size=4)
    >>> y.shape, s.shape
    (torch.Size([2, 10, 4, 3]), torch.Size([2, 4, 3, 5]))
    >>> y_only, none = ssd_chunked(x, dt, A, B, C, chunk_size=4, final_state=False)
    >>> none is None, bool((y_only - y).abs().max() <= 64 * torch.finfo(y.dtype).eps * y.abs().max())
    (True, True)
    """
    batch, T, H, P = x.shape
    G, N = B.shape[-2:]
    if H % G != 0:
        raise ValueError(f"ssd_chunked: heads {H} not a multiple of groups {G} (B {tuple(B.shape)})")
    if A.dim() not in (1, 2) or A.shape[-1] != H or (A.dim() == 2 and A.shape[0] != batch):
        raise ValueError(f"ssd_chunked: A must be ({H},) or ({batch}, {H}), got {tuple(A.shape)}")
    if chunk_size < 1:
        raise ValueError(f"ssd_chunked: chunk_size must be >= 1, got {chunk_size}")
    if out is not None and (out.shape != x.shape or not out.is_contiguous() or needs_autograd(
        x, dt, A, B, C, D, initial_state
    )):
        raise ValueError(
            f"ssd_chunked: out must be a contiguous {tuple(x.shape)} tensor and no input may "
            f"need gradients, got {tuple(out.shape)}"
        )
    # None stands for a zero state: never materialised, and its terms are skipped
    state = initial_state
    full = (T // chunk_size) * chunk_size
    pieces = []
    # full chunks batched together, then the remainder as one shorter chunk:
    # no copy of the whole sequence into a padded buffer
    for start, stop, length in ((0, full, chunk_size), (full, T, T - full)):
        if stop > start:
            y, state = _scan_equal_chunks(
                x[:, start:stop], dt[:, start:stop], A, B[:, start:stop],
                C[:, start:stop], D, state, length, None if out is None else out[:, start:stop],
                final_state=final_state or stop < T,
            )
            pieces.append(y)
    if final_state and state is None:  # T == 0, or no frame past a zero state
        state = initial_state if initial_state is not None else x.new_zeros(batch, H, P, N)
    if not final_state:
        state = None
    if out is not None:
        return out, state
    y = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)
    return y, state


def needs_autograd(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether autograd will record an op on ``tensors`` (``None`` entries are skipped).

    The plain paths take their in-place, reused-buffer branches only when this is False.

    Example
    -------
    >>> w = torch.zeros(2, requires_grad=True)
    >>> needs_autograd(torch.zeros(2), None, w), needs_autograd(torch.zeros(2))
    (True, False)
    >>> with torch.no_grad():
    ...     needs_autograd(w)
    False
    """
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _scan_equal_chunks(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor],
    state: Optional[torch.Tensor],
    L: int,
    out: Optional[torch.Tensor] = None,
    final_state: bool = True,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """SSD over ``T = nc * L`` frames; shapes as in ``ssd_chunked``; ``y`` written into ``out`` if given.

    ``state`` None is a zero state; the returned state is None unless ``final_state``.
    """
    batch, T, H, P = x.shape
    G, N = B.shape[-2:]
    nc, hg = T // L, H // G
    # without autograd, elementwise steps run in place: fewer fresh buffers,
    # fewer page faults (the dominant hidden cost on this machine)
    # (and their big temporaries live in reused `scratch` buffers)
    inplace = not needs_autograd(x, dt, A, B, C, D, state)
    xc = x.reshape(batch, nc, L, H, P)
    dtc = dt.reshape(batch, nc, L, H)
    Bc = B.reshape(batch * nc, L, G, N).transpose(1, 2)  # (b·c, G, L, N)
    Cc = C.reshape(batch * nc, L, G, N).transpose(1, 2)
    per_sequence = A.dim() == 2
    A = A[:, None, None, :] if per_sequence else A  # per sequence: over (c, L)

    # cumulative log-decay inside each chunk, heads first: (b, c, H, L)
    a_cum = torch.cumsum((dtc * A).transpose(2, 3), dim=-1)
    # dt folded into x, heads first and contiguous (what the batched product
    # below needs; matmul would copy the permuted view anyway)
    x_heads = xc.permute(0, 1, 3, 2, 4)  # (b, c, H, L, P) view
    dt_heads = dtc.transpose(2, 3)[..., None]  # (b, c, H, L, 1)
    if inplace:
        xdt = torch.mul(x_heads, dt_heads, out=scratch("ssd.xdt", (batch, nc, H, L, P), x))
    else:
        xdt = (x_heads * dt_heads).contiguous()

    # 1. inside chunks: y_diag[l] = sum_{s<=l} (C_l·B_s) exp(a_l - a_s) dt_s x_s
    scores = torch.matmul(Cc, Bc.transpose(-1, -2))  # (b·c, G, L, L), once per group
    scores = scores.masked_fill_(_above_diagonal(L, x.device), 0.0).view(batch, nc, G, 1, L, L)
    # above the diagonal a_l - a_s >= 0: clamped to 0 there, zeroed by `scores`
    diff = (a_cum[..., :, None], a_cum[..., None, :])
    if inplace:
        weights = torch.sub(*diff, out=scratch("ssd.weights", (batch, nc, H, L, L), x))
        weights = weights.view(batch, nc, G, hg, L, L).clamp_(_EXP_FLOOR, 0.0).exp_().mul_(scores)
        y_diag = torch.matmul(
            weights.view(batch, nc, H, L, L), xdt, out=scratch("ssd.y_diag", (batch, nc, H, L, P), x)
        )
    else:
        weights = (diff[0] - diff[1]).view(batch, nc, G, hg, L, L)  # (b, c, G, hg, L, L)
        weights = torch.exp(weights.clamp(_EXP_FLOOR, 0.0)) * scores
        y_diag = torch.matmul(weights.view(batch, nc, H, L, L), xdt)  # (b, c, H, L, P)

    if D is not None:
        if per_sequence:  # (b, H[, P]) -> (b, 1, 1, H, P or 1)
            D = (D if D.dim() == 3 else D[..., None])[:, None, None]
        else:
            D = D if D.dim() == 2 else D[:, None]
    if state is None and nc == 1 and not final_state:
        # one chunk from a zero state: nothing enters from outside it
        return _finish_diagonal_only(y_diag.transpose(2, 3), xc, D, inplace, out).reshape(batch, T, H, P), None

    # 2. each chunk's own contribution to the state at its end: (b, c, H, P, N)
    a_last = a_cum[..., -1]  # (b, c, H), each chunk's total log-decay
    to_end = torch.exp((a_last[..., None] - a_cum).clamp(_EXP_FLOOR, 0.0)) * dtc.transpose(2, 3)
    to_end = to_end.transpose(2, 3)[..., None]
    if inplace:
        x_scaled = torch.mul(xc, to_end, out=scratch("ssd.x_scaled", xc.shape, x))
    else:
        x_scaled = xc * to_end  # (b, c, L, H, P)
    x_scaled = x_scaled.view(batch * nc, L, G, hg * P).permute(0, 2, 3, 1)

    # 3. carry the state across chunks: h_{c+1} = e^{a_c} h_c + s_c. Decays
    # below exp(-60) become exact zeros: tiny weights times states give
    # denormal products, which slow every later op on them
    chunk_decay = torch.exp(a_last.clamp(min=_EXP_FLOOR)).masked_fill(a_last <= _EXP_FLOOR, 0.0)
    chunk_decay = chunk_decay[..., None, None]  # (b, c, H, 1, 1)
    if inplace:
        start_states, state = _carry_states_inplace(x_scaled, Bc, chunk_decay, state, final_state)
    else:
        # under autograd one decay-matrix product: a loop's backward is ~4 ops per chunk
        chunk_states = torch.matmul(x_scaled, Bc).view(batch, nc, H, P, N)
        if state is None:
            state = chunk_states.new_zeros(batch, H, P, N)
        start_states, state = _carry_states(chunk_states, a_last, state)

    # 4. read the carried state out: C_l · s_start, decayed to frame l
    s_groups = start_states.reshape(batch * nc, G, hg * P, N).transpose(-1, -2)
    if inplace:
        y = torch.matmul(Cc, s_groups, out=scratch("ssd.read", (batch * nc, G, L, hg * P), x))
    else:
        y = torch.matmul(Cc, s_groups)  # (b·c, G, L, hg·P)
    y = y.transpose(1, 2).reshape(batch, nc, L, H, P)  # a view when G == 1
    decay_in = torch.exp(a_cum.clamp(min=_EXP_FLOOR)).transpose(2, 3)[..., None]  # (b, c, L, H, 1)
    y_diag = y_diag.transpose(2, 3)  # (b, c, L, H, P) view
    if inplace:  # one pass: y_out <- y_diag + y * decay_in
        y_out = x.new_empty(x.shape) if out is None else out
        y = torch.addcmul(y_diag, y, decay_in, out=y_out.view(batch, nc, L, H, P))
    else:
        y = y * decay_in + y_diag
    if D is not None:
        y = y.addcmul_(xc, D) if inplace else torch.addcmul(y, xc, D)
    return y.reshape(batch, T, H, P), state if final_state else None


@functools.lru_cache(maxsize=32)
def _above_diagonal(L: int, device: torch.device) -> torch.Tensor:
    """``(L, L)`` bool, True above the diagonal; made once per size and device (three ops per call otherwise)."""
    with torch.inference_mode(False):  # usable both inside and outside inference mode
        return torch.ones(L, L, dtype=torch.bool, device=device).triu(1)


def _finish_diagonal_only(
    y_diag: torch.Tensor, xc: torch.Tensor, D: Optional[torch.Tensor], inplace: bool, out: Optional[torch.Tensor]
) -> torch.Tensor:
    """``y_diag + D * x`` (``(b, c, L, H, P)``), in one pass; into ``out`` without autograd."""
    if not inplace:
        # laid out as x, (b, c, L, H, P): the callers view the result as (b, T, H·P)
        return y_diag.contiguous() if D is None else (xc * D).add_(y_diag)
    y_out = (xc.new_empty(xc.shape) if out is None else out).view(xc.shape)
    return y_out.copy_(y_diag) if D is None else torch.addcmul(y_diag, xc, D, out=y_out)



def _carry_states_inplace(
    x_scaled: torch.Tensor,
    Bc: torch.Tensor,
    chunk_decay: torch.Tensor,
    state: Optional[torch.Tensor],
    final_state: bool = True,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Chunk states and the states entering each chunk, in one buffer, without autograd.

    A loop of one in-place ``addcmul_`` per chunk over a buffer laid out as
    ``[_, e(0,0), ..., e(0,nc-1), e(1,0), ...]`` (``e`` = state at a chunk's
    end): once the loop is done, slot ``b·nc + c`` holds the state entering
    chunk ``c`` of sequence ``b`` after the first slot of each sequence is
    overwritten by its initial state, so the read-out takes the buffer as a
    plain ``(b·nc, ...)`` view, with no shifted copy. (An ``(nc+1)²`` decay
    matrix product instead cost ~3x the whole loop here, mostly in copies.)
    The buffer is a reused ``scratch`` one, valid until the next call.

    Arguments
    ---------
    x_scaled : torch.Tensor
        ``(b·nc, G, hg·P, L)``: inputs weighted by ``dt`` and their decay to the chunk's end.
    Bc : torch.Tensor
        ``(b·nc, G, L, N)``.
    chunk_decay : torch.Tensor
        ``e^{a} (b, nc, H, 1, 1)``, each chunk's total decay.
    state : torch.Tensor or None
        ``h_0 (b, H, P, N)``; None: zeros.
    final_state : bool
        Return the final state (else None).

    Returns
    -------
    starts, final : torch.Tensor
        As ``_carry_states``.
    """
    batch, nc, H = chunk_decay.shape[:3]
    G, N = Bc.shape[1], Bc.shape[-1]
    P = x_scaled.shape[2] * G // H
    buf = scratch("ssd.states", (batch * nc + 1, H, P, N), Bc)
    ends = buf[1:].view(batch, nc, H, P, N)
    torch.matmul(x_scaled, Bc, out=ends.view(batch * nc, G, -1, N))  # chunk contributions
    if state is not None:
        ends[:, 0].addcmul_(state, chunk_decay[:, 0])
    for c in range(1, nc):
        ends[:, c].addcmul_(ends[:, c - 1], chunk_decay[:, c])
    final = ends[:, -1].clone() if final_state else None
    starts = buf[:-1].view(batch, nc, H, P, N)
    if state is None:
        starts[:, 0].zero_()
    else:
        starts[:, 0] = state
    return starts, final


def _carry_states(
    chunk_states: torch.Tensor, chunk_log_decay: torch.Tensor, state: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """States entering each chunk, and after the last: ``h_{c+1} = e^{a_c} h_c + s_c``.

    Evaluated as one ``(nc + 1) × (nc + 1)`` lower-triangular decay matrix per
    head times the stacked ``[h_0, s_0, ..., s_{nc-1}]``, not as a Python loop:
    on this shared 2-core machine every small op is an OpenMP barrier, and under
    load a loop of ``2·nc`` tiny ops cost several times more than the product.
    The decay exponents are segment sums taken directly (not differences of a
    long cumulative sum), so they stay accurate in fp32.

    Arguments
    ---------
    chunk_states : torch.Tensor
        ``s (b, nc, H, P, N)``.
    chunk_log_decay : torch.Tensor
        ``a (b, nc, H)``, each chunk's total log-decay (<= 0).
    state : torch.Tensor
        ``h_0 (b, H, P, N)``.

    Returns
    -------
    starts : torch.Tensor
        ``(b, nc, H, P, N)``, the state entering each chunk.
    final : torch.Tensor
        ``(b, H, P, N)``.
    """
    batch, nc, H, P, N = chunk_states.shape
    # v[k] = a[k-1], v[0] = 0; seg[z, j] = sum_{j < k <= z} v[k] for j <= z
    v = torch.nn.functional.pad(chunk_log_decay.permute(0, 2, 1), (1, 0))  # (b, H, nc+1)
    lower = torch.ones(nc + 1, nc + 1, dtype=torch.bool, device=v.device)
    seg = v[..., :, None].expand(-1, -1, -1, nc + 1).masked_fill(~lower.tril(-1), 0.0)
    seg = torch.cumsum(seg, dim=-2)
    # decays below exp(-60) become exact zeros: tiny weights times states give
    # denormal products, which made this small product ~30x slower
    keep = lower.tril() & (seg > _EXP_FLOOR)
    weights = torch.exp(seg.clamp(min=_EXP_FLOOR)) * keep  # (b, H, z, j)
    stacked = torch.cat([state[:, None], chunk_states], dim=1)  # (b, nc+1, H, P, N)
    # einsum picks a far faster layout here than matmul on the transposed view (~5x)
    out = torch.einsum("bhzj,bjhx->bzhx", weights, stacked.flatten(-2))  # (b, nc+1, H, P·N)
    out = out.unflatten(-1, (P, N))
    return out[:, :nc], out[:, nc].contiguous()
