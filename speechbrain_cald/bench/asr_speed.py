"""Encoder inference time and peak memory of ASR models versus audio length.

For each model, a *factory* builds two things in the measuring process:
``encode(x)``, the timed call (no grad), and ``make_input(seconds)``, which
prepares its input for that much audio (e.g. features through the CNN
front-end, outside the timing). Each model runs in its own fresh interpreter.

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
>>> rows = measure_speed(_demo_factory(""), seconds=[1, 2], repeats=2)
>>> [r["seconds"] for r in rows], sorted(rows[0])
([1.0, 2.0], ['frames', 'ms', 'peak_mb', 'repeats', 'seconds'])
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from speechbrain_cald.bench.memory import call_peak_mb

__all__ = ["measure_speed", "run_isolated", "load_factory", "speed_table", "plot_speed"]

Factory = Callable[[str], Tuple[Callable[[torch.Tensor], object], Callable[[float], torch.Tensor]]]


def measure_speed(
    built: Tuple[Callable[[torch.Tensor], object], Callable[[float], torch.Tensor]],
    seconds: Sequence[float],
    repeats: int = 3,
    budget_s: float = 30.0,
) -> List[Dict[str, float]]:
    """Median time and peak-memory rise of ``encode`` at each length, in this process.

    Arguments
    ---------
    built : (encode, make_input)
        What a factory returns: the timed call and its input maker.
    seconds : sequence of float
        Audio lengths; measured in ascending order.
    repeats : int
        Timed calls per length after one warm-up call.
    budget_s : float
        Stop repeating a length after this long (at least 2 timed calls).

    Returns
    -------
    list of dict
        One row per length: ``seconds, frames, ms, peak_mb, repeats``
        (``frames`` is the time dimension of the input, ``x.shape[1]``).
    """
    encode, make_input = built
    rows = []
    for sec in sorted(float(s) for s in seconds):
        x = make_input(sec)
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
        rows.append(dict(seconds=sec, frames=int(x.shape[1]), ms=statistics.median(times), peak_mb=peak, repeats=len(times)))
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


def run_isolated(factory: str, arg: str, seconds: Sequence[float], repeats: int = 3, threads: int = 0) -> List[Dict[str, float]]:
    """:func:`measure_speed` in a fresh interpreter (so ``ru_maxrss`` is this model's alone).

    Arguments
    ---------
    factory : str
        ``"file.py:function"`` or ``"package.module:function"``.
    arg : str
        The factory's argument (e.g. a model folder).
    seconds : sequence of float
        Audio lengths.
    repeats : int
        Timed calls per length.
    threads : int
        ``torch.set_num_threads`` in the worker (0: torch's default).

    Returns
    -------
    list of dict
        As :func:`measure_speed`.
    """
    cmd = [sys.executable, "-m", "speechbrain_cald.bench.asr_speed", "--worker", factory, arg,
           "--seconds", *map(str, seconds), "--repeats", str(repeats), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"speed worker {factory} {arg} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speed_table(results: Dict[str, List[Dict[str, float]]]) -> str:
    """Markdown table: one row per model, time and peak memory per length.

    Arguments
    ---------
    results : dict
        Model name -> rows of :func:`measure_speed`.

    Returns
    -------
    str
        The table.

    Example
    -------
    >>> print(speed_table({"a": [dict(seconds=10.0, frames=250, ms=12.3, peak_mb=4.0, repeats=3)]}))
    | model | 10 s: ms | 10 s: peak MB |
    |---|---|---|
    | a | 12 | 4 |
    """
    lengths = sorted({r["seconds"] for rows in results.values() for r in rows})
    head = "| model | " + " | ".join(f"{s:g} s: ms | {s:g} s: peak MB" for s in lengths) + " |"
    lines = [head, "|---" * (1 + 2 * len(lengths)) + "|"]
    for name, rows in results.items():
        by = {r["seconds"]: r for r in rows}
        cells = []
        for s in lengths:
            r = by.get(s)
            cells += [f"{r['ms']:,.0f}", f"{r['peak_mb']:,.0f}"] if r else ["—", "—"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_speed(
    results: Dict[str, List[Dict[str, float]]],
    path: str,
    title: str = "Encoder inference time vs audio length",
    x: Tuple[str, str] = ("seconds", "audio length (s)"),
    panels: Sequence[Tuple[str, str, str]] = (
        ("ms", "encoder time (ms, median)", ""),
        ("peak_mb", "peak memory rise (MB)", "Peak memory vs audio length"),
    ),
) -> str:
    """PNG: one panel per measured quantity versus length, one line per model.

    Arguments
    ---------
    results : dict
        Model name -> rows (dicts holding ``x[0]`` and every panel's key).
    path : str
        The PNG to write.
    title : str
        Title of the first panel.
    x : (key, label)
        The row key on the horizontal axis and its label.
    panels : sequence of (key, y label, title)
        What each panel plots (an empty title: ``title`` for the first panel).

    Returns
    -------
    str
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (key, ylabel, panel_title) in zip(axes[0], panels):
        for name, rows in results.items():
            ax.plot([r[x[0]] for r in rows], [r[key] for r in rows], marker="o", label=name)
        ax.set(xlabel=x[1], ylabel=ylabel, title=panel_title or title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _demo_factory(arg: str):
    """A tiny stand-in model: a linear layer over 100 frames per second."""
    lin = torch.nn.Linear(8, 8)
    return (lambda x: lin(x)), (lambda sec: torch.randn(1, int(100 * sec), 8))


def main(argv=None) -> None:
    """Worker entry: ``python -m speechbrain_cald.bench.asr_speed --worker FACTORY ARG --seconds ...``."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--worker", nargs=2, metavar=("FACTORY", "ARG"), required=True)
    p.add_argument("--seconds", type=float, nargs="+", required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    built = load_factory(args.worker[0])(args.worker[1])
    print(json.dumps(measure_speed(built, args.seconds, args.repeats)))


if __name__ == "__main__":
    main()
