"""Generation speed and memory versus prompt length: KV-cache teacher vs recurrent-state student.

For each prompt length P, with transformers' ``generate`` (greedy, batch 1,
``use_cache=True``, exactly ``N`` new tokens):

- ``prefill_ms``: from the call to the first new token's scores (the prompt's
  pass), median over repeats;
- ``tok_s``: decoding speed after the prompt, ``(N - 1) / (t_N - t_1)`` with
  ``t_k`` the moment the k-th new token's scores reach the logits processors
  (so each step's model call and bookkeeping, nothing of the prompt), median
  over repeats;
- ``prompt_mb``: memory the prompt pass added at its peak (activations,
  workspace, the cache it leaves), from the call to the first token;
- ``decode_mb``: memory the N - 1 decoding steps added at their peak above
  the memory at the first token: what generating costs per new token
  (resident set via ``speechbrain_cald.bench.speed.peak_mark`` /
  ``peak_since``; on a GPU ``torch.cuda.max_memory_allocated``);
- ``cache_mb``: what the cache holds after the prompt and N tokens (keys and
  values of every attention layer; the mixers' recurrent states).

A transformer's per-token cost grows with P (attention over, and copies of,
a longer KV cache); a recurrent student's does not. Each model runs in a
fresh interpreter (:func:`run_isolated`) so that one's memory does not hide
the other's. Prompts are the first P tokens of a token shard (real text) when
one is given, else random token ids.

Command line (one model; prints a JSON list of rows)::

    python -m speechbrain_cald.bench.generation --worker MODEL_DIR --prompt_lengths 128 2000 --new_tokens 32
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch

from speechbrain_cald.bench import speed

__all__ = ["cache_nbytes", "generation_table", "load_causal_lm", "measure_generation", "plot_generation", "run_isolated"]


def load_causal_lm(folder: str) -> torch.nn.Module:
    """A saved causal LM: a converted student (``cald_conversion.json``) or a transformers teacher."""
    from speechbrain_cald.convert import load_student, load_teacher
    from speechbrain_cald.convert.io import CONVERSION_FILE

    if os.path.isfile(os.path.join(folder, CONVERSION_FILE)):
        return load_student(folder).eval()
    return load_teacher(folder).eval()


def cache_nbytes(cache) -> int:
    """Bytes held by a transformers ``Cache``: keys / values, and mixer states.

    Example
    -------
    >>> from transformers import DynamicCache
    >>> cache = DynamicCache()
    >>> _ = cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), 0)
    >>> cache_nbytes(cache)
    192
    """
    from speechbrain_cald.convert.state_cache import state_nbytes

    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
        total += state_nbytes(getattr(layer, "state", None))
    return total


class _Memory:
    """Peak-memory windows on the CPU (resident set) or on a CUDA device (allocated memory)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device

    def mark(self):
        if not self.cuda:
            return speed.peak_mark()
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return torch.cuda.memory_allocated(self.device)

    def since(self, mark) -> float:
        if not self.cuda:
            return speed.peak_since(mark)
        torch.cuda.synchronize(self.device)
        return max(0.0, (torch.cuda.max_memory_allocated(self.device) - mark) / 2**20)


def _prompt(length: int, vocab: int, shard: Optional[str]) -> torch.Tensor:
    if shard:
        import numpy as np

        with open(shard[: -len(".bin")] + ".json", encoding="utf-8") as f:
            meta = json.load(f)
        tokens = np.memmap(shard, dtype=np.dtype(meta["dtype"]), mode="r", shape=(int(meta["tokens"]),))
        reps = -(-length // len(tokens))
        ids = np.tile(np.asarray(tokens[: min(length, len(tokens))], dtype=np.int64), reps)[:length]
        return torch.from_numpy(ids)[None]
    return torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(length))


class _Stamps:
    """A logits processor that only notes when each generation step's scores arrive.

    With ``memory``, it also closes the prompt pass's memory window at the
    first token and opens the decoding steps' one.
    """

    def __init__(self, memory: Optional["_Memory"] = None, mark=None):
        self.times: List[float] = []
        self.memory, self.mark = memory, mark
        self.prompt_mb = self.decode_mb = float("nan")

    def __call__(self, input_ids, scores):
        if scores.is_cuda:
            torch.cuda.synchronize(scores.device)
        self.times.append(time.perf_counter())
        if self.memory is not None and len(self.times) == 1:
            self.prompt_mb = self.memory.since(self.mark)
            self.mark = self.memory.mark()
        return scores

    def close(self) -> None:
        if self.memory is not None:
            self.decode_mb = self.memory.since(self.mark)


@torch.no_grad()
def measure_generation(
    model: torch.nn.Module,
    prompt_lengths: Sequence[int],
    new_tokens: int = 32,
    repeats: int = 3,
    shard: Optional[str] = None,
) -> List[Dict[str, float]]:
    """Time and memory of ``model.generate`` at each prompt length (see the module docstring).

    Example
    -------
    >>> from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    >>> lm = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=32)).eval()
    >>> rows = measure_generation(lm, [8, 16], new_tokens=4, repeats=1)
    >>> [r["prompt"] for r in rows], sorted(rows[0])
    ([8, 16], ['cache_mb', 'decode_mb', 'new_tokens', 'prefill_ms', 'prompt', 'prompt_mb', 'repeats', 'tok_s'])
    """
    from transformers import LogitsProcessorList

    if new_tokens < 2:
        raise ValueError(f"measure_generation: new_tokens must be >= 2 (a decoding step after the prompt), found {new_tokens}")
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().num_embeddings
    pad = model.generation_config.eos_token_id
    pad = pad[0] if isinstance(pad, list) else pad
    rows = []
    for length in sorted(int(p) for p in prompt_lengths):
        prompt = _prompt(length, vocab, shard).to(device)

        def generate(stamps: Optional[_Stamps] = None, **extra):
            return model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=pad,
                logits_processor=LogitsProcessorList([stamps] if stamps is not None else []), **extra,
            )

        generate()  # warm-up
        memory = _Memory(device)
        gc.collect()
        watch = _Stamps(memory, memory.mark())
        out = generate(watch, return_dict_in_generate=True)
        watch.close()
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        prefill, per_token = [], []
        for _ in range(repeats):
            stamps = _Stamps()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            generate(stamps)
            if len(stamps.times) != new_tokens:
                raise RuntimeError(f"generate made {len(stamps.times)} steps, expected {new_tokens}")
            prefill.append(stamps.times[0] - t0)
            per_token.append((stamps.times[-1] - stamps.times[0]) / (new_tokens - 1))
        rows.append(dict(
            prompt=length, new_tokens=new_tokens, prefill_ms=1e3 * statistics.median(prefill),
            tok_s=1.0 / statistics.median(per_token), prompt_mb=watch.prompt_mb, decode_mb=watch.decode_mb,
            cache_mb=cache_nbytes(cache) / 2**20 if cache is not None else float("nan"), repeats=repeats,
        ))
    return rows


def run_isolated(
    folder: str, prompt_lengths: Sequence[int], new_tokens: int = 32, repeats: int = 3,
    shard: Optional[str] = None, threads: int = 0, device: str = "cpu",
) -> List[Dict[str, float]]:
    """:func:`measure_generation` for the model saved in ``folder``, in a fresh interpreter."""
    cmd = [sys.executable, "-m", "speechbrain_cald.bench.generation", "--worker", folder,
           "--prompt_lengths", *map(str, prompt_lengths), "--new_tokens", str(new_tokens),
           "--repeats", str(repeats), "--threads", str(threads), "--device", device]
    if shard:
        cmd += ["--shard", shard]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"generation benchmark of {folder} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def generation_table(results: Dict[str, List[Dict[str, float]]]) -> str:
    """Markdown: per model and prompt length, decoding tokens/s, prefill, peak and cache memory.

    Example
    -------
    >>> print(generation_table({"a": [dict(prompt=100, tok_s=50.0, prefill_ms=12.0, prompt_mb=3.0, decode_mb=0.1, cache_mb=0.5)]}))
    | model | prompt tokens | decoding tokens/s | memory while decoding (MB) | cache (MB) | prompt pass (ms) | prompt pass memory (MB) |
    |---|---:|---:|---:|---:|---:|---:|
    | a | 100 | 50.0 | 0.1 | 0.50 | 12 | 3.0 |
    """
    lines = [
        "| model | prompt tokens | decoding tokens/s | memory while decoding (MB) | cache (MB) | prompt pass (ms) | prompt pass memory (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in results.items():
        for r in rows:
            lines.append(
                f"| {name} | {r['prompt']:,} | {r['tok_s']:,.1f} | {r['decode_mb']:,.1f} | {r['cache_mb']:,.2f} | "
                f"{r['prefill_ms']:,.0f} | {r['prompt_mb']:,.1f} |"
            )
    return "\n".join(lines)


def plot_generation(results: Dict[str, List[Dict[str, float]]], path: str) -> str:
    """PNG: decoding tokens/s, memory while decoding and cache size versus prompt length."""
    from speechbrain_cald.bench.speed import plot_speed

    return plot_speed(
        results, path, xlabel="prompt length (tokens)", key="prompt",
        panels=(
            ("tok_s", "new tokens per second (greedy, batch 1)", "Decoding speed vs prompt length"),
            ("decode_mb", "peak memory rise while decoding (MB)", "Decoding memory vs prompt length"),
            ("cache_mb", "KV cache / recurrent state (MB)", "Cache size vs prompt length"),
        ),
    )


def main(argv=None) -> None:
    """Worker: measure one saved model and print its rows as JSON."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--worker", required=True, metavar="MODEL_DIR")
    p.add_argument("--prompt_lengths", type=int, nargs="+", required=True)
    p.add_argument("--new_tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shard", default=None, help="a token shard (.bin) whose first tokens are the prompts")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = load_causal_lm(args.worker).to(args.device)
    rows = measure_generation(model, args.prompt_lengths, args.new_tokens, args.repeats, args.shard)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
