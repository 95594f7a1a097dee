"""Carry the replaced attention's projections into the new mixer.

Two uses, one registry keyed by the mixer's class name (``INITIALIZERS``):

- Linformer always keeps Q / K / V / out (the CALD paper's text setting): the
  attention's weights are copied into its ``q_proj``, ``k_proj``, ``v_proj`` and
  ``out_proj`` whatever ``init`` says.
- ``init="attention"`` for Mamba-style mixers, as "Mamba in the Llama" (Wang et al.,
  2024) does: value -> the x path of ``in_proj``, key -> B, query -> C,
  output -> ``out_proj``. Where sizes differ, the leading rows (columns for
  ``out_proj``) that fit are copied: with ``ngroups = num_heads`` and
  ``d_state = head_dim`` the key and query map exactly; with the paper's
  ``ngroups=1, d_state=128`` B / C take the first 128 key / query rows. The z
  gate, conv, dt, A, D and norm keep their default initialisation. Mamba v1 has
  no input-side B / C (they come from ``x_proj`` of the conv output), so only
  value and output transfer. In BiMamba2 both directions get the same weights
  and each ``out_proj`` half of the output weight, so the sum starts at the
  attention's output scale. Biases are copied only where the mixer has them.

Each initializer returns a list of strings saying what it copied (shown by the
CLI and recorded in ``cald_conversion["replaced"]``).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from speechbrain_cald.convert.families.base import Projection

__all__ = ["INITIALIZERS", "initialize_from_attention", "copy_rows"]


@torch.no_grad()
def copy_rows(
    linear: nn.Linear, start: int, size: int, proj: Projection, scale: float = 1.0
) -> str:
    """Copy ``proj`` into rows ``[start, start + size)`` of ``linear``, as many leading rows as fit.

    Returns a note such as ``"[0:16] <- 16/16 rows"``.

    Example
    -------
    >>> lin = nn.Linear(2, 4, bias=False)
    >>> copy_rows(lin, 2, 2, Projection(torch.ones(3, 2)))
    '[2:4] <- 2/3 rows'
    >>> lin.weight[2:].tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    if proj.weight.shape[1] != linear.weight.shape[1]:
        raise ValueError(
            f"projection input size {proj.weight.shape[1]} != mixer input size {linear.weight.shape[1]}"
        )
    n = min(size, proj.weight.shape[0])
    linear.weight[start : start + n].copy_(proj.weight[:n] * scale)
    if linear.bias is not None:
        if proj.bias is not None:
            linear.bias[start : start + n].copy_(proj.bias[:n] * scale)
    return f"[{start}:{start + n}] <- {n}/{proj.weight.shape[0]} rows"


@torch.no_grad()
def copy_output(linear: nn.Linear, proj: Projection, scale: float = 1.0) -> str:
    """Copy the attention output projection into ``linear`` (leading input columns that fit)."""
    if proj.weight.shape[0] != linear.weight.shape[0]:
        raise ValueError(
            f"output projection size {proj.weight.shape[0]} != mixer output size {linear.weight.shape[0]}"
        )
    n = min(linear.weight.shape[1], proj.weight.shape[1])
    linear.weight[:, :n].copy_(proj.weight[:, :n] * scale)
    if linear.bias is not None and proj.bias is not None:
        linear.bias.copy_(proj.bias * scale)
    return f"out_proj[:, :{n}] <- output" + (f" x {scale:g}" if scale != 1.0 else "")


def init_mamba2(mixer: nn.Module, proj: Dict[str, Projection], out_scale: float = 1.0) -> List[str]:
    """Mamba2 ``in_proj`` rows are ``[z, x, B, C, dt]``."""
    d_inner, gn = mixer.d_inner, mixer.ngroups * mixer.d_state
    notes = []
    for role, start, size, label in (
        ("v", d_inner, d_inner, "x"),
        ("k", 2 * d_inner, gn, "B"),
        ("q", 2 * d_inner + gn, gn, "C"),
    ):
        if role in proj:
            notes.append(f"{label}{copy_rows(mixer.in_proj, start, size, proj[role])} of {role}")
    if "o" in proj:
        notes.append(copy_output(mixer.out_proj, proj["o"], out_scale))
    return notes


def init_mamba(mixer: nn.Module, proj: Dict[str, Projection], out_scale: float = 1.0) -> List[str]:
    """Mamba v1 ``in_proj`` rows are ``[x, z]``; B and C are not input projections."""
    notes = []
    if "v" in proj:
        notes.append(f"x{copy_rows(mixer.in_proj, 0, mixer.d_inner, proj['v'])} of v")
    if "o" in proj:
        notes.append(copy_output(mixer.out_proj, proj["o"], out_scale))
    return notes


def init_bimamba2(mixer: nn.Module, proj: Dict[str, Projection]) -> List[str]:
    """Both directions alike; each ``out_proj`` gets half the output weight."""
    notes = []
    for name in ("forward_mixer", "backward_mixer"):
        inner = getattr(mixer, name)
        fn = INITIALIZERS[type(inner).__name__]
        notes += [f"{name}.{n}" for n in fn(inner, proj, out_scale=0.5)]
    return notes


@torch.no_grad()
def init_linformer(mixer: nn.Module, proj: Dict[str, Projection]) -> List[str]:
    """Copy Q / K / V / out into the Linformer's own projections (zero bias where
    the attention had none). Without an ``"o"`` projection (BERT / RoBERTa keep
    ``attention.output.dense`` after the replaced module) ``out_proj`` becomes
    ``nn.Identity`` so two output projections are never stacked."""
    notes = []
    if "o" not in proj:
        mixer.out_proj = nn.Identity()
        notes.append("out_proj -> Identity (the layer keeps its own output projection)")
    for role, name in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj")):
        if role not in proj:
            continue
        linear = getattr(mixer, name)
        p = proj[role]
        if linear.weight.shape != p.weight.shape:
            raise ValueError(
                f"LinformerAttention.{name}.weight {tuple(linear.weight.shape)} != attention "
                f"{role} weight {tuple(p.weight.shape)}"
            )
        linear.weight.copy_(p.weight)
        if linear.bias is not None:
            linear.bias.copy_(p.bias if p.bias is not None else torch.zeros_like(linear.bias))
        notes.append(f"{name} <- {role}")
    return notes


INITIALIZERS: Dict[str, Callable[..., List[str]]] = {
    "Mamba2": init_mamba2,
    "Mamba": init_mamba,
    "BiMamba2": init_bimamba2,
    "LinformerAttention": init_linformer,
}

def initialize_from_attention(mixer: nn.Module, proj: Dict[str, Projection], init: str) -> List[str]:
    """Apply the registered initializer for ``mixer`` if ``init == "attention"`` (or
    always, for mixers that declare ``kept_from_attention``: the paper's Linformer).
    Returns what was copied."""
    name = type(mixer).__name__
    if getattr(mixer, "kept_from_attention", ()) or init == "attention":
        fn: Optional[Callable] = INITIALIZERS.get(name)
        if fn is None:
            return [f"no attention initializer for {name}: default init"]
        with torch.no_grad():
            return fn(mixer, proj)
    return []
