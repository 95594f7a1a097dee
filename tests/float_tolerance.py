"""Float comparisons for the suite: tolerances from the dtype and the size of the values.

Two computations of the same mathematics in floating point agree only up to
rounding, and *which* rounding happens depends on the machine: BLAS picks its
kernels (and so the order of each sum) by the shapes involved and by the CPU
(AVX2 or AVX-512, Intel or AMD), so a batched and an unbatched call, a chunked
and a one-pass scan, ours and transformers' layer differ by a few units of the
dtype's epsilon *relative to the size of the values*. ``torch.allclose``'s
default (``atol=1e-8`` plus ``rtol=1e-5`` per element) is wrong twice: per
element, a value near zero that came out of a sum of large terms gets no
tolerance at all (the AMD failure of issue 16: a conv state differing by 1.2e-7
where values are ~0.5), and a fixed ``atol`` means nothing across dtypes.

``FLOAT_TOLERANCE_LOG=/tmp/margins.tsv pytest ...`` appends, per comparison, the
fraction of its budget used (``file:line<TAB>max|diff| / tolerance``).

So a test states how many roundings the two sides may differ by:

    |actual - expected| <= factor * eps(dtype) * scale

``scale`` is the magnitude of the values compared (the largest ``|expected|``
or ``|actual|``) unless the test passes the magnitude of the terms that were
summed (e.g. a loss that cancels to a small number). ``factor`` is one of the
budgets below, chosen by what differs between the two sides; each call site
says why in a comment when it is not obvious.

Exact equality (``torch.equal``) is for what is literally the same
computation: a copy, masked zeros, the same call twice, state loaded back.
"""

from __future__ import annotations

import inspect
import os
from typing import Optional, Union

import torch

__all__ = ["ELEMENTWISE", "REDUCTION", "LAYER", "NETWORK", "assert_close", "tolerance"]

# Rounding budgets in units of eps(dtype) x scale. A sum of K terms whose order
# differs is off by up to ~K eps in the worst case and ~sqrt(K) eps typically;
# K here is at most a few thousand.
ELEMENTWISE = 8  # the same inputs through a few elementwise operations done differently (x * 0.5 vs x / 2)
REDUCTION = 64  # one sum / matrix product whose summation order may differ (batch shape, BLAS kernel, CPU)
LAYER = 512  # a layer computed two ways: several products, a normalisation, a chunked vs one-pass scan
NETWORK = 4096  # several layers, or two independent implementations of a layer (ours vs transformers')

Number = Union[float, int, torch.Tensor]


def tolerance(dtype: torch.dtype, scale: float, factor: float) -> float:
    """``factor * eps(dtype) * scale``: the absolute tolerance for values of size ``scale``.

    Example
    -------
    >>> tolerance(torch.float32, 2.0, REDUCTION) == 64 * torch.finfo(torch.float32).eps * 2.0
    True
    """
    return factor * torch.finfo(dtype).eps * float(scale)


def assert_close(
    actual: Number,
    expected: Number,
    *,
    factor: float,
    scale: Optional[float] = None,
    dtype: Optional[torch.dtype] = None,
    msg: str = "",
) -> None:
    """Assert ``|actual - expected| <= factor * eps * scale`` elementwise (see the module docstring).

    Arguments
    ---------
    actual, expected : tensor or number
        Same shape; numbers are compared as float64 unless ``dtype`` is given.
    factor : float
        The rounding budget (``ELEMENTWISE``, ``REDUCTION``, ``LAYER``, ``NETWORK``).
    scale : float, optional
        The size of the values; default the largest ``|expected|`` or ``|actual|``.
    dtype : torch.dtype, optional
        The precision the values were computed in (default: that of the tensors;
        pass ``torch.float32`` for a float32 loss converted to a Python float).
    msg : str
        Added to the failure message.
    """
    a = torch.as_tensor(actual)
    e = torch.as_tensor(expected)
    if dtype is None:
        dtype = torch.promote_types(a.dtype, e.dtype)
        if not dtype.is_floating_point:
            dtype = torch.float64
    a64, e64 = a.detach().to(torch.float64), e.detach().to(torch.float64)
    if a64.shape != e64.shape:
        raise AssertionError(f"shapes differ: {tuple(a64.shape)} vs {tuple(e64.shape)}. {msg}")
    if scale is None:
        scale = max(float(e64.abs().max()) if e64.numel() else 0.0, float(a64.abs().max()) if a64.numel() else 0.0)
    atol = tolerance(dtype, scale, factor)
    diff = (a64 - e64).abs()
    worst = float(diff.max()) if diff.numel() else 0.0
    log = os.environ.get("FLOAT_TOLERANCE_LOG")
    if log:  # how much of each budget is used, to audit margins on a new CPU
        caller = inspect.stack()[1]
        with open(log, "a") as f:
            f.write(f"{os.path.relpath(caller.filename)}:{caller.lineno}\t{worst / atol if atol else float(worst > 0):.4f}\n")
    if not worst <= atol:  # also catches NaN
        raise AssertionError(
            f"not close: max |difference| {worst:.3g} > {atol:.3g} = {factor} x eps({dtype}) x scale {scale:.3g}"
            f" ({int((diff > atol).sum())} of {diff.numel()} elements). {msg}"
        )
