"""Gated RMS normalisation, as used inside Mamba2 (mamba_ssm's ``RMSNormGated``).

The only parameter is ``weight``, so ``norm.weight`` moves between this module,
``mamba_ssm.ops.triton.layernorm_gated.RMSNorm`` and transformers'
``MambaRMSNormGated`` unchanged.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


class RMSNormGated(torch.nn.Module):
    """RMS norm over groups of features, gated by ``silu(z)``.

    With ``norm_before_gate=False`` (Mamba2's default) the output is
    ``rmsnorm(x * silu(z)) * weight``; with ``True`` it is
    ``rmsnorm(x) * weight * silu(z)``. The root mean square is taken over
    groups of ``group_size`` consecutive features (one group per Mamba2 group).

    Arguments
    ---------
    hidden_size : int
        Number of features ``D``.
    eps : float
        Added to the mean square before the square root.
    norm_before_gate : bool
        Normalise before (True) or after (False) applying the gate.
    group_size : int, optional
        Features per normalisation group; ``None`` means one group of ``D``.
    device, dtype
        Factory arguments of the weight.

    Example
    -------
    >>> norm = RMSNormGated(8, group_size=4)
    >>> x, z = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    >>> norm(x, z).shape
    torch.Size([2, 3, 8])
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-5,
        norm_before_gate: bool = False,
        group_size: Optional[int] = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        group_size = hidden_size if group_size is None else group_size
        if hidden_size % group_size != 0:
            raise ValueError(
                f"RMSNormGated: hidden_size {hidden_size} is not a multiple of "
                f"group_size {group_size}"
            )
        self.eps = eps
        self.group_size = group_size
        self.norm_before_gate = norm_before_gate
        self.weight = torch.nn.Parameter(
            torch.ones(hidden_size, device=device, dtype=dtype)
        )

    def forward(self, x: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Normalise ``x (..., D)``, gated by ``z (..., D)`` when given.

        Arguments
        ---------
        x : torch.Tensor
            Input ``(..., D)``.
        z : torch.Tensor, optional
            Gate ``(..., D)``.

        Returns
        -------
        torch.Tensor
            ``(..., D)``, same dtype as ``x``.
        """
        dtype = x.dtype
        # statistics in at least fp32, as mamba_ssm and transformers do
        work = torch.promote_types(dtype, torch.float32)
        x = x.to(work)
        gate = None if z is None else F.silu(z.to(work))
        if gate is not None and not self.norm_before_gate:
            x = x * gate
        d = x.shape[-1]
        weight = self.weight.to(work)
        if self.group_size == d:
            # F.rms_norm is one fused kernel; it beats pow/mean/rsqrt chains
            y = F.rms_norm(x, (d,), weight, self.eps)
        else:
            groups = x.unflatten(-1, (d // self.group_size, self.group_size))
            y = F.rms_norm(groups, (self.group_size,), None, self.eps).flatten(-2) * weight
        if gate is not None and self.norm_before_gate:
            y = y * gate
        return y.to(dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.weight.shape[0]}, eps={self.eps}, group_size={self.group_size}, "
            f"norm_before_gate={self.norm_before_gate}"
        )
