"""Encoder inference time and peak memory of ASR models versus audio length.

``speechbrain_cald.bench.speed`` with lengths in seconds of audio: a factory's
``make_input(seconds)`` prepares that much audio, rows carry ``seconds``, and
the table and plot speak of audio. See ``bench.speed`` for how time and peak
memory are measured (one fresh interpreter per model).

Example
-------
>>> from speechbrain_cald.bench.speed import _demo_factory
>>> rows = measure_speed(_demo_factory(""), seconds=[1, 2], repeats=2)
>>> [r["seconds"] for r in rows], sorted(rows[0])
([1.0, 2.0], ['frames', 'ms', 'peak_mb', 'repeats', 'seconds'])
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Sequence, Tuple

import torch

from speechbrain_cald.bench import speed
from speechbrain_cald.bench.speed import Rows, load_factory

__all__ = ["encoder_asr_factory", "measure_speed", "run_isolated", "load_factory", "speed_table", "plot_speed"]


def _in_seconds(rows: Rows) -> Rows:
    return [{("seconds" if k == "length" else k): v for k, v in r.items()} for r in rows]


def measure_speed(
    built: Tuple[Callable[[torch.Tensor], object], Callable[[float], torch.Tensor]],
    seconds: Sequence[float],
    repeats: int = 3,
    budget_s: float = 30.0,
) -> Rows:
    """``bench.speed.measure_speed`` over audio lengths; rows ``seconds, frames, ms, peak_mb, repeats``."""
    return _in_seconds(speed.measure_speed(built, seconds, repeats, budget_s))


def run_isolated(factory: str, arg: str, seconds: Sequence[float], repeats: int = 3, threads: int = 0) -> Rows:
    """``bench.speed.run_isolated`` over audio lengths (rows with ``seconds``)."""
    return _in_seconds(speed.run_isolated(factory, arg, seconds, repeats, threads))


def speed_table(results: Dict[str, Rows]) -> str:
    """Markdown table, lengths in seconds.

    Example
    -------
    >>> print(speed_table({"a": [dict(seconds=10.0, frames=250, ms=12.3, peak_mb=4.0, repeats=3)]}))
    | model | 10 s: ms | 10 s: peak MB |
    |---|---|---|
    | a | 12 | 4 |
    """
    return speed.speed_table(results, unit="s", key="seconds")


def plot_speed(results: Dict[str, Rows], path: str, title: str = "Encoder inference time vs audio length") -> str:
    """PNG: encoder time and peak memory versus audio length."""
    return speed.plot_speed(
        results,
        path,
        title=title,
        xlabel="audio length (s)",
        key="seconds",
        memory_title="Peak memory vs audio length",
    )


def encoder_asr_factory(folder: str):
    """Factory for an exported ``EncoderASR`` folder (``speechbrain_cald.inference``): the encoder layers' time.

    ``make_input(seconds)`` runs the wav2vec2 CNN feature encoder and feature
    projection (untimed); ``encode`` is the transformer / linear-time layer
    stack, the part a student changes.
    """
    from hyperpyyaml import load_hyperpyyaml

    with open(os.path.join(folder, "hyperparams.yaml"), encoding="utf-8") as f:
        hp = load_hyperpyyaml(f)
    model = hp["model"]
    model.load_state_dict(torch.load(os.path.join(folder, "model.ckpt"), map_location="cpu", weights_only=True))
    encoder = model.eval().encoder

    def make_input(seconds: float) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        wav = 0.1 * torch.randn(1, int(seconds * hp["sample_rate"]), generator=g)
        with torch.no_grad():
            return encoder.frontend(wav)

    return encoder.layers_forward, make_input
