"""Peak resident memory of one call, for the speed benchmarks (any model).

The rise of the process's resident-set high-water mark (``VmHWM``, reset
through ``/proc/self/clear_refs``) above its resident set just before the call,
after freed heap memory was handed back to the OS (``malloc_trim``), so that
memory freed earlier is not reused unseen: activations, caches and workspace of
that call, weights excluded. Without ``/proc`` (not Linux) it falls back to the
rise of ``ru_maxrss``, which only ever grows (measure in ascending size order).
"""

from __future__ import annotations

import ctypes
import gc
import resource
from typing import Callable, Tuple

__all__ = ["call_peak_mb", "measure_call"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise KeyError(key)


def measure_call(call: Callable[[], object]) -> Tuple[object, float]:
    """``(call(), MB the call added to the resident set at its peak)``.

    Example
    -------
    >>> result, mb = measure_call(lambda: bytearray(64 * 2**20))
    >>> len(result), mb >= 0.0
    (67108864, True)
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap pages back to the OS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        base = _proc_status_mb("VmRSS")
    except (OSError, KeyError):
        base = _peak_rss_mb()
        result = call()
        return result, max(0.0, _peak_rss_mb() - base)
    result = call()
    return result, max(0.0, _proc_status_mb("VmHWM") - base)


def call_peak_mb(call: Callable[[], object]) -> float:
    """MB a call adds to the resident set at its peak (see the module docstring)."""
    return measure_call(call)[1]
