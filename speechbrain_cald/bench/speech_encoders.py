"""Training-step and inference time and peak memory of a wav2vec2 teacher and its linear-time students.

The models are the LibriSpeech recipe's, at real sizes with random weights:

- the teacher: ``lobes.hf_speech.CTCModel`` over a wav2vec2 ``HFSpeechEncoder``
  (wav2vec2-base: 12 layers, hidden 768, 12 heads, FFN 3072, the 7-layer conv
  front end of 320 samples per frame, frozen as in the recipe; 29 CTC outputs);
- its students, built as ``librispeech_mamba.yaml`` / ``librispeech_linformer.yaml``
  build them with ``convert.to_linear_time``: BiMamba2 with the CALD paper's
  sizes (``backend="auto"``: the mamba_ssm kernels on a GPU where they import),
  and Linformer (k 256, max_len 1750, resampled beyond).

A **training step** is what the recipe's optimizer step costs the model itself:
forward on a batch of ``batch_seconds`` of audio cut in utterances of one length,
CTC loss, backward, AdamW step (a CALD student's step also runs the teacher
forward without gradients for its layer targets: the ``teacher forward`` rows).
**Inference** is the encoder with its CTC head on one utterance, without gradients.
Precision ``bf16`` is autocast (the recipe's ``--precision=bf16``), ``fp32``
plain float32. Each model is built once and measured at every length; on a
GPU a CUDA out-of-memory error is a result (``"OOM"``): memory is freed and
the model's longer lengths are not tried. Times are medians (CUDA events on a
GPU, wall clock on a CPU); memory is the peak of allocated GPU memory during
the timed calls, weights and optimizer state included (on a CPU: the rise of
the resident set, ``bench.speed.call_peak_mb``).

Example
-------
>>> rows = measure_inference(TINY, "cpu", seconds=[0.5], precisions=["fp32"], repeats=1,
...                          models=["BiMamba2 student"])
>>> [(r["model"], r["seconds"], r["backend"]) for r in rows]
[('BiMamba2 student', 0.5, 'torch')]
"""

from __future__ import annotations

import gc
import logging
import math
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_cald.bench.mixers_cuda import cuda_ms
from speechbrain_cald.bench.speed import call_peak_mb
from speechbrain_cald.convert import to_linear_time
from speechbrain_cald.lobes.hf_speech import CTCModel, HFSpeechEncoder

__all__ = ["EncoderSizes", "BASE", "TINY", "MODELS", "build_model", "kernel_backends", "measure_train_steps",
           "measure_inference", "finite_numbers", "OOM"]

logger = logging.getLogger(__name__)

OOM = "OOM"
SAMPLE_RATE = 16000
CHARS_PER_SECOND = 15  # LibriSpeech reads at about 15 characters a second: the CTC targets' length


@dataclass(frozen=True)
class EncoderSizes:
    """A wav2vec2 encoder's sizes and its students' Linformer settings."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    conv_dim: Tuple[int, ...]
    conv_pos: int = 128
    conv_pos_groups: int = 16
    n_tokens: int = 29  # LibriSpeech's characters + blank (librispeech_*.yaml output_neurons)
    linformer_k: int = 256  # librispeech_linformer.yaml
    linformer_max_len: int = 1750
    bimamba2: Optional[Tuple[Tuple[str, int], ...]] = None  # None: to_linear_time's paper defaults


BASE = EncoderSizes(hidden=768, layers=12, heads=12, ffn=3072, conv_dim=(512,) * 7)
# the dry run's: the real conv geometry (320 samples a frame) at a tiny width
TINY = EncoderSizes(hidden=32, layers=2, heads=2, ffn=64, conv_dim=(16,) * 7, conv_pos=16, conv_pos_groups=2,
                    linformer_k=16, linformer_max_len=64,
                    bimamba2=(("d_state", 16), ("headdim", 16), ("chunk_size", 32)))
MODELS = ("teacher", "BiMamba2 student", "Linformer student")


def _teacher(sizes: EncoderSizes) -> nn.Module:
    from transformers import Wav2Vec2Config

    cfg = Wav2Vec2Config(
        hidden_size=sizes.hidden, num_hidden_layers=sizes.layers, num_attention_heads=sizes.heads,
        intermediate_size=sizes.ffn, conv_dim=sizes.conv_dim, num_conv_pos_embeddings=sizes.conv_pos,
        num_conv_pos_embedding_groups=sizes.conv_pos_groups, feat_extract_norm="group",
        mask_time_prob=0.05, mask_time_length=10, layerdrop=0.0,  # the recipe's config_overrides
    )
    return CTCModel(HFSpeechEncoder(config=cfg.to_dict(), freeze_feature_encoder=True), n_tokens=sizes.n_tokens)


def build_model(name: str, sizes: EncoderSizes, seed: int = 0) -> nn.Module:
    """One of ``MODELS``, built on the CPU (random weights, ``seed``).

    Example
    -------
    >>> m = build_model("Linformer student", TINY)
    >>> type(m).__name__, m.cald_conversion["mixer"]
    ('CTCModel', 'linformer')
    """
    if name not in MODELS:
        raise ValueError(f"build_model: unknown model '{name}', expected one of {MODELS}")
    torch.manual_seed(seed)
    teacher = _teacher(sizes)
    if name == "teacher":
        return teacher
    if name == "BiMamba2 student":
        return to_linear_time(teacher, mixer="bimamba2", **dict(sizes.bimamba2 or ()))
    return to_linear_time(teacher, mixer="linformer", k=sizes.linformer_k, max_len=sizes.linformer_max_len,
                          too_long="interpolate")


def kernel_backends(model: nn.Module, device: str) -> str:
    """The path every (Bi)Mamba2 of ``model`` takes for inputs on ``device``: ``"mamba_ssm"``, ``"torch"``, ``"-"`` (none).

    Example
    -------
    >>> kernel_backends(build_model("BiMamba2 student", TINY), "cpu"), kernel_backends(nn.Linear(2, 2), "cpu")
    ('torch', '-')
    """
    probe = torch.zeros(1, 1, 1, device=device)
    found = {m._resolve_backend(probe) for m in model.modules()
             if hasattr(m, "_resolve_backend") and hasattr(m, "chunk_size")}
    return "/".join(sorted(found)) or "-"


# ------------------------------------------------------------------ measuring
def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _timed(fn: Callable[[], None], device: str, repeats: int, budget_s: float) -> Tuple[float, float]:
    """``(median ms, peak MB)`` of ``fn`` after one warm-up call (Triton's autotuning happens there).

    Fewer repeats when one call is long: at most about ``budget_s`` seconds in all.
    """
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first_s = time.perf_counter() - t0
    repeats = max(1, min(repeats, int(budget_s / max(first_s, 1e-6))))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        ms = cuda_ms(fn, repeats, warmup=0, device="cuda")
        return ms, torch.cuda.max_memory_allocated() / 2**20
    peak = call_peak_mb(fn)
    return cuda_ms(fn, repeats, warmup=0, device="cpu"), peak


def _autocast(device: str, precision: str):
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got '{precision}'")
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16")


def _measure_rows(
    models: Sequence[str],
    sizes: EncoderSizes,
    device: str,
    cases: Sequence[Tuple[str, float]],
    one: Callable[[nn.Module, str, float], Dict[str, object]],
    deadline: Optional[float],
) -> List[Dict[str, object]]:
    """Every model at every ``(precision, seconds)`` case; OOM ends a model's longer cases at that precision."""
    rows: List[Dict[str, object]] = []
    for name in models:
        model = build_model(name, sizes).to(device)
        backend = kernel_backends(model, device)
        out_of_memory: Dict[str, float] = {}
        for precision, seconds in cases:
            row: Dict[str, object] = {"model": name, "precision": precision, "seconds": seconds, "backend": backend}
            if precision in out_of_memory:
                row.update(status=f"not tried: OOM at {out_of_memory[precision]:g} s")
            elif deadline is not None and time.monotonic() > deadline:
                row.update(status="not tried: time budget spent")
            else:
                row.update(one(model, precision, seconds))
                if row.get("ms") == OOM:
                    out_of_memory[precision] = seconds
            rows.append(row)
            logger.info("%s", " | ".join(str(v) for v in row.values()))
        del model
        _free(device)
    return rows


def _oom_guard(call: Callable[[], Dict[str, object]], device: str) -> Dict[str, object]:
    """``call()``, or the OOM row when the GPU runs out of memory (memory freed before returning)."""
    failed = False
    try:
        return call()
    except torch.cuda.OutOfMemoryError:
        failed = True  # leave the except block first: its traceback holds the call's tensors
    if failed:
        _free(device)
    return {"ms": OOM, "peak MB": OOM, "status": "out of memory"}


def measure_train_steps(
    sizes: EncoderSizes,
    device: str,
    seconds: Sequence[float] = (5.0, 15.0, 35.0),
    batch_seconds: float = 200.0,
    precisions: Sequence[str] = ("fp32", "bf16"),
    repeats: int = 5,
    models: Sequence[str] = MODELS,
    deadline: Optional[float] = None,
    call_budget_s: float = 10.0,
) -> List[Dict[str, object]]:
    """Training-step time and peak memory of each model, and the teacher's no-grad forward (CALD targets).

    Arguments
    ---------
    sizes : EncoderSizes
        ``BASE`` (wav2vec2-base) or ``TINY``.
    device : str
        ``"cuda"`` or ``"cpu"``.
    seconds : sequence of float
        Utterance lengths; a batch holds ``floor(batch_seconds / s)`` of them (at least 1).
    batch_seconds : float
        Audio per batch (the recipe's ``max_batch_length``: 200 s).
    precisions : sequence of str
        ``"fp32"`` and / or ``"bf16"`` (autocast).
    repeats : int
        Timed steps after one warm-up step.
    models : sequence of str
        Names from ``MODELS``.
    deadline : float, optional
        ``time.monotonic()`` after which no new case starts (its row says so).
    call_budget_s : float
        Fewer repeats when one step is long.

    Returns
    -------
    list of dict
        One row per model (and ``teacher forward (no grad)``), precision and
        length: ``batch``, ``ms``, ``peak MB`` (numbers, or ``"OOM"``), ``backend``.
    """
    cases = [(p, s) for p in precisions for s in seconds]

    def batched(run: Callable[..., Dict[str, object]]) -> Callable[[nn.Module, str, float], Dict[str, object]]:
        def one(model: nn.Module, precision: str, secs: float) -> Dict[str, object]:
            batch = max(1, int(batch_seconds // secs))
            return {"batch": batch, **_oom_guard(lambda: run(model, device, precision, secs, batch, repeats,
                                                             call_budget_s), device)}
        return one

    step = partial(_train_step, n_tokens=sizes.n_tokens)
    rows = _measure_rows(models, sizes, device, cases, batched(step), deadline)
    if "teacher" in models:
        extra = _measure_rows(["teacher"], sizes, device, cases, batched(_forward), deadline)
        rows += [{**r, "model": "teacher forward (no grad)"} for r in extra]
    return rows


def _train_step(model: nn.Module, device: str, precision: str, seconds: float, batch: int, repeats: int,
                budget_s: float, n_tokens: int) -> Dict[str, object]:
    model.train()
    n = int(seconds * SAMPLE_RATE)
    gen = torch.Generator().manual_seed(0)
    wavs = (0.1 * torch.randn(batch, n, generator=gen)).to(device)
    wav_lens = torch.ones(batch, device=device)
    n_chars = max(1, int(seconds * CHARS_PER_SECOND))
    targets = torch.randint(1, n_tokens, (batch, n_chars), generator=gen).to(device)
    target_lengths = torch.full((batch,), n_chars, dtype=torch.long, device=device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step() -> None:
        with _autocast(device, precision):
            logits, lengths = model(wavs, wav_lens)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)
        loss = F.ctc_loss(log_probs, targets, lengths, target_lengths, zero_infinity=True)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    try:
        ms, peak = _timed(step, device, repeats, budget_s)
    finally:
        optimizer.zero_grad(set_to_none=True)
    return {"ms": ms, "peak MB": peak, "status": "ok"}


def _forward(model: nn.Module, device: str, precision: str, seconds: float, batch: int, repeats: int,
             budget_s: float) -> Dict[str, object]:
    model.eval()
    wavs = (0.1 * torch.randn(batch, int(seconds * SAMPLE_RATE), generator=torch.Generator().manual_seed(0))).to(device)

    def forward() -> None:
        with torch.no_grad(), _autocast(device, precision):
            model(wavs)

    ms, peak = _timed(forward, device, repeats, budget_s)
    return {"ms": ms, "peak MB": peak, "status": "ok"}


def measure_inference(
    sizes: EncoderSizes,
    device: str,
    seconds: Sequence[float] = (30.0, 120.0, 600.0, 1800.0),
    precisions: Sequence[str] = ("fp32", "bf16"),
    repeats: int = 3,
    models: Sequence[str] = MODELS,
    deadline: Optional[float] = None,
    call_budget_s: float = 10.0,
) -> List[Dict[str, object]]:
    """Encoder (with its CTC head) inference time and peak memory on one utterance of each length.

    Arguments as :func:`measure_train_steps` (batch 1, no gradients); rows carry
    ``frames`` (the encoder's output length) instead of ``batch``.
    """
    cases = [(p, s) for p in precisions for s in seconds]

    def infer(model: nn.Module, precision: str, secs: float) -> Dict[str, object]:
        frames = int(model.encoder.frame_lengths(torch.tensor([int(secs * SAMPLE_RATE)]))[0])
        return {"frames": frames, **_oom_guard(lambda: _forward(model, device, precision, secs, 1, repeats,
                                                                call_budget_s), device)}

    return _measure_rows(models, sizes, device, cases, infer, deadline)


def finite_numbers(rows: Sequence[Dict[str, object]], keys: Sequence[str] = ("ms", "peak MB")) -> bool:
    """Whether every measured value in ``rows`` is a finite number or ``"OOM"`` (rows not tried are skipped).

    Example
    -------
    >>> finite_numbers([{"ms": 1.0, "peak MB": "OOM", "status": "out of memory"}, {"status": "not tried: x"}])
    True
    >>> finite_numbers([{"ms": float("nan"), "peak MB": 1.0, "status": "ok"}])
    False
    """
    for row in rows:
        for key in keys:
            if key not in row:
                continue
            value = row[key]
            if value != OOM and not (isinstance(value, (int, float)) and math.isfinite(value)):
                return False
    return True
