"""BiMamba2: a forward and a backward-in-time Mamba mixer, summed (CALD's speech student)."""

from __future__ import annotations

from typing import Optional

import torch

from speechbrain_cald.nnet import causal_mixers, get_mixer
from speechbrain_cald.nnet.mamba2 import mamba2_add_reversed, mamba2_stacked_forward
from speechbrain_cald.nnet.ssd import needs_autograd


def reverse_valid(x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """Reverse each sequence's valid frames in time, leaving padding at the end.

    The map is its own inverse: applying it twice gives ``x`` back.

    Arguments
    ---------
    x : torch.Tensor
        Right-padded ``(B, T, ...)``.
    lengths : torch.Tensor, optional
        Absolute valid lengths ``(B,)``; ``None`` reverses all ``T`` frames.

    Returns
    -------
    torch.Tensor
        ``(B, T, ...)`` with ``out[b, t] = x[b, lengths[b] - 1 - t]`` for valid ``t``
        and ``x[b, t]`` otherwise.

    Example
    -------
    >>> x = torch.arange(8.0).view(2, 4, 1)
    >>> reverse_valid(x, torch.tensor([4, 2]))[..., 0]
    tensor([[3., 2., 1., 0.],
            [5., 4., 6., 7.]])
    """
    if lengths is None:
        return x.flip(1)
    T = x.shape[1]
    t = torch.arange(T, device=x.device)
    lengths = lengths.to(x.device)[:, None]
    idx = torch.where(t < lengths, lengths - 1 - t, t)  # (B, T), one gather for the batch
    idx = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


class BiMamba2(torch.nn.Module):
    """Bidirectional Mamba mixer: ``y = fwd(x) + rev(bwd(rev(x)))``, padded frames 0.

    ``rev`` reverses each sequence's valid part (padding stays at the end), so
    the backward mixer sees every sequence as if it were alone.

    Arguments
    ---------
    d_model : int
        Model width ``D``.
    mixer : str
        ``"mamba2"`` (default) or ``"mamba"`` (Mamba v1) for both directions.
    residual_inside : bool
        Add the input ``x`` to the sum (CALD's "residual inside" option).
    fuse_directions : bool, optional
        With Mamba2 directions on the plain-PyTorch path, run both as one
        batch (``mamba2_stacked_forward``): each projection is one batched
        product and the conv, scan and norm are issued once for both, half the
        operator calls of two passes. Same parameters and results, up to
        rounding. ``None`` (default) decides per call: fused, except in
        training on more than one block of frames (``B·T`` above the mixers'
        ``block_size``). Operator calls are what short sequences pay most for,
        and there the fused pass was as fast or faster forward and in
        training; a long training step holds both directions' intermediates
        at once and was slower fused (``docs/bench/mixers_short.md``).
        ``False``: two passes (without autograd the backward one is added into
        the output block by block: about half the working memory of a long
        forward); ``True``: always fused.
    **mixer_kwargs
        Passed to both directional mixers (e.g. ``d_state``, ``expand``,
        ``headdim``, ``chunk_size``, ``backend``).

    Example
    -------
    >>> bi = BiMamba2(16, d_state=8, expand=1, headdim=8, chunk_size=4)
    >>> x = torch.randn(2, 9, 16)
    >>> y = bi(x, lengths=torch.tensor([9, 5]))
    >>> y.shape, bool((y[1, 5:] == 0).all())
    (torch.Size([2, 9, 16]), True)
    >>> bi._fused(x), BiMamba2(16, d_state=8, expand=1, headdim=8, fuse_directions=False)._fused(x)
    (True, False)
    """

    #: reads the whole sequence (its backward direction sees the future)
    causal = False

    def __init__(
        self,
        d_model: int,
        mixer: str = "mamba2",
        residual_inside: bool = False,
        fuse_directions: Optional[bool] = None,
        **mixer_kwargs,
    ) -> None:
        super().__init__()
        try:
            cls = get_mixer(mixer)  # the registry's class, imported on use (Mamba v1 only when asked for)
        except KeyError:
            cls = None
        if cls is None or not cls.causal:
            kind = "unknown mixer" if cls is None else "a direction must be a causal mixer, not"
            raise ValueError(f"BiMamba2: {kind} '{mixer}': expected one of {causal_mixers()}")
        self.d_model = d_model
        self.mixer_name = mixer
        self.residual_inside = residual_inside
        self.fuse_directions = fuse_directions
        self.forward_mixer = cls(d_model, **mixer_kwargs)
        self.backward_mixer = cls(d_model, **mixer_kwargs)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mix ``x (B, T, D)`` in both directions.

        Arguments
        ---------
        x : torch.Tensor
            Right-padded input ``(B, T, D)``.
        lengths : torch.Tensor, optional
            Absolute valid lengths ``(B,)``; ``None`` = all ``T``.

        Returns
        -------
        torch.Tensor
            ``(B, T, D)``, exactly 0 at padded frames.
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"BiMamba2: x must be (B, T, d_model={self.d_model}), got shape {tuple(x.shape)}"
            )
        if lengths is None and not self._needs_grad(x) and self._plain_mamba2(x) and not self._fused(x):
            # the backward direction adds into the forward one block by block:
            # no reversed or summed copies of the whole sequence
            y = mamba2_add_reversed(self.backward_mixer, x, self.forward_mixer(x))
            return y + x if self.residual_inside else y
        x_rev = reverse_valid(x, lengths)
        if self._fused(x):
            ys = mamba2_stacked_forward(
                [self.forward_mixer, self.backward_mixer], torch.stack([x, x_rev]), lengths
            )
            y, y_rev = ys[0], ys[1]
        else:
            y = self.forward_mixer(x, lengths)
            y_rev = self.backward_mixer(x_rev, lengths)
        y = y + reverse_valid(y_rev, lengths)
        if self.residual_inside:
            y = y + x
            if lengths is not None:
                mask = torch.arange(x.shape[1], device=x.device) < lengths.to(x.device)[:, None]
                y = y * mask[..., None].to(y.dtype)
        return y

    def _fused(self, x: torch.Tensor) -> bool:
        """Whether both directions run as one batch (Mamba2, plain-PyTorch path)."""
        if not self._plain_mamba2(x) or self.fuse_directions is False:
            return False
        if self.fuse_directions is None and self._needs_grad(x):
            # training on long inputs: two passes hold half the intermediates
            return x.shape[0] * x.shape[1] <= self.forward_mixer.block_size
        return True

    def _plain_mamba2(self, x: torch.Tensor) -> bool:
        """Whether both directions are Mamba2 on the plain-PyTorch path."""
        return self.mixer_name == "mamba2" and all(
            m._resolve_backend(x) == "torch" for m in (self.forward_mixer, self.backward_mixer)
        )

    def _needs_grad(self, x: torch.Tensor) -> bool:
        return needs_autograd(x, *self.parameters())

    def extra_repr(self) -> str:
        return (
            f"mixer={self.mixer_name}, residual_inside={self.residual_inside}, "
            f"fuse_directions={self.fuse_directions}"
        )
