"""Inference time and peak memory of any model versus input length.

For each model, a *factory* builds two things in the measuring process:
``encode(x)``, the timed call (no grad), and ``make_input(length)``, which
prepares its input of that length, in the caller's unit (seconds of audio,
tokens of text), outside the timing (e.g. features through a CNN front-end).
Each model runs in its own fresh interpreter. ``speechbrain_cald.bench.asr_speed``
is this module with lengths in seconds of audio.

Peak memory of a call is the rise of the process's resident-set high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs``) above its resident set just
before the call, after freed heap memory was handed back to the OS
(``malloc_trim``), so that memory freed while building the model is not reused
unseen: activations and workspace of that call, weights excluded. Without
``/proc`` (not Linux) the column falls back to the rise of ``ru_maxrss`` over
the whole run, measured in ascending length order.

A factory is named ``"path/to/file.py:function"`` or ``"package.module:function"``
and called with one string argument (e.g. a model folder).

Example
-------
>>> rows = measure_speed(_demo_factory(""), lengths=[1, 2], repeats=2)
>>> [r["length"] for r in rows], sorted(rows[0])
([1.0, 2.0], ['frames', 'length', 'ms', 'peak_mb', 'repeats'])
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = [
    "call_peak_mb", "measure_speed", "peak_mark", "peak_since", "run_isolated", "load_factory", "speed_table", "plot_speed",
]

Factory = Callable[[str], Tuple[Callable[[torch.Tensor], object], Callable[[float], torch.Tensor]]]
Rows = List[Dict[str, float]]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise KeyError(key)


def peak_mark() -> Tuple[float, bool]:
    """Start a peak-memory window now: ``(resident MB now, whether the high-water mark was reset)``.

    Hands freed heap pages back to the OS and resets ``VmHWM`` (Linux); elsewhere
    the window falls back to ``ru_maxrss``, which only grows.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap pages back to the OS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        return _proc_status_mb("VmRSS"), True
    except (OSError, KeyError):
        return _peak_rss_mb(), False


def peak_since(mark: Tuple[float, bool]) -> float:
    """MB the resident set rose above ``mark`` (from :func:`peak_mark`) at its peak since then.

    Example
    -------
    >>> mark = peak_mark()
    >>> block = bytearray(32 * 2**20)
    >>> peak_since(mark) >= 0.0
    True
    """
    base, reset = mark
    return max(0.0, (_proc_status_mb("VmHWM") if reset else _peak_rss_mb()) - base)


def call_peak_mb(call: Callable[[], object]) -> float:
    """Resident memory a call adds at its peak (Linux); NaN-free fallback elsewhere."""
    gc.collect()
    mark = peak_mark()
    call()
    return peak_since(mark)


def measure_speed(
    built: Tuple[Callable[[torch.Tensor], object], Callable[[float], torch.Tensor]],
    lengths: Sequence[float],
    repeats: int = 3,
    budget_s: float = 30.0,
) -> Rows:
    """Median time and peak-memory rise of ``encode`` at each length, in this process.

    Arguments
    ---------
    built : (encode, make_input)
        What a factory returns: the timed call and its input maker.
    lengths : sequence of float
        Input lengths in the factory's unit; measured in ascending order.
    repeats : int
        Timed calls per length after one warm-up call.
    budget_s : float
        Stop repeating a length after this long (at least 2 timed calls).

    Returns
    -------
    list of dict
        One row per length: ``length, frames, ms, peak_mb, repeats``
        (``frames`` is the time dimension of the input, ``x.shape[1]``).
    """
    encode, make_input = built
    rows = []
    for length in sorted(float(s) for s in lengths):
        x = make_input(length)
        with torch.no_grad():
            encode(x)  # warm-up: lazy initialisation
            peak = call_peak_mb(lambda: encode(x))
            times: List[float] = []
            start = time.perf_counter()
            while len(times) < repeats:
                t0 = time.perf_counter()
                encode(x)
                times.append((time.perf_counter() - t0) * 1e3)
                if len(times) >= 2 and time.perf_counter() - start > budget_s:
                    break
        rows.append(dict(length=length, frames=int(x.shape[1]), ms=statistics.median(times), peak_mb=peak, repeats=len(times)))
    return rows


def load_factory(spec: str) -> Factory:
    """Import ``"file.py:function"`` or ``"package.module:function"``.

    Arguments
    ---------
    spec : str
        Where the factory lives.

    Returns
    -------
    callable
        The factory.
    """
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"factory '{spec}': expected 'path/to/file.py:function' or 'package.module:function'")
    if where.endswith(".py"):
        if not os.path.exists(where):
            raise FileNotFoundError(f"factory file '{where}' does not exist")
        sys.path.insert(0, os.path.dirname(os.path.abspath(where)))  # its sibling imports
        module_spec = importlib.util.spec_from_file_location(os.path.basename(where)[:-3], where)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    if not hasattr(module, name):
        raise AttributeError(f"factory '{spec}': {where} has no '{name}'")
    return getattr(module, name)


def run_isolated(factory: str, arg: str, lengths: Sequence[float], repeats: int = 3, threads: int = 0) -> Rows:
    """:func:`measure_speed` in a fresh interpreter (so ``ru_maxrss`` is this model's alone).

    Arguments
    ---------
    factory : str
        ``"file.py:function"`` or ``"package.module:function"``.
    arg : str
        The factory's argument (e.g. a model folder).
    lengths : sequence of float
        Input lengths in the factory's unit.
    repeats : int
        Timed calls per length.
    threads : int
        ``torch.set_num_threads`` in the worker (0: torch's default).

    Returns
    -------
    list of dict
        As :func:`measure_speed`.
    """
    cmd = [sys.executable, "-m", "speechbrain_cald.bench.speed", "--worker", factory, arg,
           "--lengths", *map(str, lengths), "--repeats", str(repeats), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"speed worker {factory} {arg} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speed_table(results: Dict[str, Rows], unit: str = "", key: str = "length") -> str:
    """Markdown table: one row per model, time and peak memory per length.

    Arguments
    ---------
    results : dict
        Model name -> rows of :func:`measure_speed`; a length missing from a
        model's rows (beyond what it can take) shows as a dash.
    unit : str
        Written after each length in the header (``"s"``, ``"tokens"``).
    key : str
        The rows' length key.

    Returns
    -------
    str
        The table.

    Example
    -------
    >>> print(speed_table({"a": [dict(length=10.0, frames=250, ms=12.3, peak_mb=4.0, repeats=3)]}, "s"))
    | model | 10 s: ms | 10 s: peak MB |
    |---|---|---|
    | a | 12 | 4 |
    """
    lengths = sorted({r[key] for rows in results.values() for r in rows})
    unit = f" {unit}" if unit else ""
    head = "| model | " + " | ".join(f"{s:g}{unit}: ms | {s:g}{unit}: peak MB" for s in lengths) + " |"
    lines = [head, "|---" * (1 + 2 * len(lengths)) + "|"]
    for name, rows in results.items():
        by = {r[key]: r for r in rows}
        cells = []
        for s in lengths:
            r = by.get(s)
            cells += [f"{r['ms']:,.0f}", f"{r['peak_mb']:,.0f}"] if r else ["—", "—"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_speed(
    results: Dict[str, Rows],
    path: str,
    title: str = "Inference time vs input length",
    xlabel: str = "input length",
    key: str = "length",
    memory_title: str = "Peak memory vs input length",
    panels: Optional[Sequence[Tuple[str, str, str]]] = None,
) -> str:
    """PNG: time (and peak memory) versus length, one line per model.

    Arguments
    ---------
    results : dict
        Model name -> rows of :func:`measure_speed`.
    path : str
        The PNG to write.
    title, memory_title : str
        Titles of the two panels.
    xlabel : str
        The length axis' label (with its unit).
    key : str
        The rows' length key.
    panels : sequence of (row key, y label, title), optional
        What each panel plots; default the time (``ms``) and peak memory
        (``peak_mb``) panels.

    Returns
    -------
    str
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if panels is None:
        panels = (("ms", "time (ms, median)", title), ("peak_mb", "peak memory rise (MB)", memory_title))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (value, ylabel, panel_title) in zip(axes[0], panels):
        for name, rows in results.items():
            ax.plot([r[key] for r in rows], [r[value] for r in rows], marker="o", label=name)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=panel_title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _demo_factory(arg: str):
    """A tiny stand-in model: a linear layer over 100 frames per unit of length."""
    lin = torch.nn.Linear(8, 8)
    return (lambda x: lin(x)), (lambda sec: torch.randn(1, int(100 * sec), 8))


def main(argv=None) -> None:
    """Worker entry: ``python -m speechbrain_cald.bench.speed --worker FACTORY ARG --lengths ...``."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--worker", nargs=2, metavar=("FACTORY", "ARG"), required=True)
    p.add_argument("--lengths", type=float, nargs="+", required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    built = load_factory(args.worker[0])(args.worker[1])
    print(json.dumps(measure_speed(built, args.lengths, args.repeats)))


if __name__ == "__main__":
    main()
