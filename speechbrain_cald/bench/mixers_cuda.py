"""Our plain-PyTorch Mamba2 / BiMamba2 / Mamba versus the mamba_ssm kernels, on one CUDA GPU.

The same weights run through ``backend="torch"`` (ours) and
``backend="mamba_ssm"`` (mamba_ssm's Triton SSD kernels for Mamba2; its
selective-scan CUDA kernel for Mamba v1), in fp32, or with ``--dtype bfloat16``
with the modules and inputs in bf16 against our path in fp32 (see below):

- **checks**: outputs and gradients (input and every parameter) of the two
  backends, padded batches (valid frames against each sequence run alone,
  padded frames exactly 0), a long sequence cut in three pieces with the state
  carried, BiMamba2 with padding, Mamba v1; each as the largest absolute
  difference, the largest absolute reference value and ``allclose(rtol=1e-3,
  atol=1e-3)``.
- **timings**: BiMamba2 forward and forward+backward (median of CUDA-event
  timed repeats after warm-up, which includes Triton's autotuning) and the
  peak of allocated GPU memory above the weights and inputs, for our path at
  chunk 64 and 256, the kernels (unfused: conv in PyTorch; fused: mamba_ssm's
  conv + scan + norm + out_proj kernel, when causal_conv1d imports), and SDPA
  self-attention with its projections; Mamba v1 both ways.

With ``--dtype bfloat16`` the checks compare (a) our path in bf16 and (b) the
kernels in bf16 against our path in fp32 holding the same (bf16-rounded)
weights and input, with a bar that follows from bf16's precision and the
reference's magnitude (``tolerance``), and the timings run in bf16.

mamba_ssm's Triton kernels accumulate fp32 products in TF32 unless
``TRITON_F32_DEFAULT=ieee`` is set; the header of the report says which. The
report's file name carries the dtype and that setting when they are not the
defaults (``report_stem``), so such runs do not overwrite the fp32 / TF32 one.
mamba_ssm's package ``__init__`` imports its compiled selective-scan extension
eagerly; ``--triton-only`` registers the package without running that
``__init__`` so the Mamba2 kernels (Triton, nothing to compile) work where the
extension was not built; the Mamba v1 kernel rows are then skipped. The library
itself never needs this. mamba_ssm's pure-Python wheel, for a machine without
internet, builds without a GPU: ``MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE
pip wheel --no-deps --no-build-isolation mamba_ssm-X.tar.gz`` (without
``MAMBA_FORCE_BUILD`` its setup.py looks for a prebuilt CUDA wheel and fails
under a CPU-only torch).

Usage::

    python -m speechbrain_cald.bench.mixers_cuda [--lengths 3000 12000 48000]
        [--batches 1 8] [--repeats 10] [--checks-only] [--triton-only]
        [--dtype {float32,bfloat16}] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import importlib.util
import itertools
import json
import math
import os
import re
import statistics
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from speechbrain_cald.bench.mixers import SDPAAttention, Sizes


# a CPU dry run (``--dry-run-cpu``) checks this script's own logic with the
# torch backend on both sides and wall-clock timing
DEVICE = "cuda"
KERNELS = "mamba_ssm"

# A result in a low-precision dtype passes when
#     max |got - ref| <= c * u * max |ref|,   u = finfo(dtype).eps / 2 (2**-8 for bf16),
# i.e. c roundings of the largest value: bf16 keeps 8 significant bits, each op of
# the chain rounds its result once and the errors of a layer's few dozen ops mostly
# average out. c = 8 for outputs and states (in_proj, conv, scan, gated norm,
# out_proj), c = 32 for gradients (a backward chain about twice as long, and
# parameter gradients summed over every frame).
TOL_FACTOR = {"output": 8.0, "grad": 32.0}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# --------------------------------------------------------------- kernels
def load_mamba_ssm(triton_only: bool) -> Dict[str, object]:
    """Import mamba_ssm (optionally without its ``__init__``) and say what works."""
    info: Dict[str, object] = {}
    if triton_only and "mamba_ssm" not in sys.modules:
        spec = importlib.util.find_spec("mamba_ssm")
        if spec is None:
            raise SystemExit("mamba_ssm is not installed: nothing to compare against")
        pkg = types.ModuleType("mamba_ssm")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["mamba_ssm"] = pkg
        info["mamba_ssm import"] = "Triton modules only (package __init__ skipped)"
    else:
        importlib.import_module("mamba_ssm")
        info["mamba_ssm import"] = "full package"
    meta = list(sys.modules["mamba_ssm"].__path__)[0]
    version_line = next(
        (ln for ln in Path(meta, "__init__.py").read_text().splitlines() if ln.startswith("__version__")), "?"
    )
    info["mamba_ssm"] = version_line.split("=")[-1].strip().strip("\"'")
    import triton

    info["triton"] = triton.__version__
    from mamba_ssm.ops.triton import ssd_combined

    info["causal_conv1d (fused Mamba2 path)"] = ssd_combined.causal_conv1d_fwd_function is not None
    try:
        importlib.import_module("mamba_ssm.ops.selective_scan_interface")
        info["selective_scan_cuda (Mamba v1)"] = True
    except Exception as err:  # ImportError of the compiled extension
        info["selective_scan_cuda (Mamba v1)"] = f"no ({type(err).__name__}: {err})"
    return info


# ---------------------------------------------------------------- models
def _mixer(kind: str, s: Sizes, chunk: int, backend: str, seed: int = 0) -> torch.nn.Module:
    from speechbrain_cald.nnet import get_mixer

    torch.manual_seed(seed)
    return get_mixer(kind)(
        s.d_model, d_state=s.d_state, d_conv=s.d_conv, expand=s.expand, headdim=s.headdim,
        chunk_size=chunk, backend=_backend(backend),
    ).to(DEVICE)


def mamba2(s: Sizes, chunk: int, backend: str, seed: int = 0) -> torch.nn.Module:
    return _mixer("mamba2", s, chunk, backend, seed)


def bimamba2(s: Sizes, chunk: int, backend: str, seed: int = 0) -> torch.nn.Module:
    return _mixer("bimamba2", s, chunk, backend, seed)


def _backend(name: str) -> str:
    return KERNELS if name == "mamba_ssm" else name


def mamba1(d_model: int, backend: str, seed: int = 0) -> torch.nn.Module:
    from speechbrain_cald.nnet.mamba import Mamba

    torch.manual_seed(seed)
    return Mamba(d_model, d_state=16, expand=2, backend=_backend(backend)).to(DEVICE)


def set_backend(module: torch.nn.Module, backend: str, fused: bool = True) -> None:
    """Switch every (Bi)Mamba(2) inside ``module`` to ``backend`` in place."""
    for m in module.modules():
        if hasattr(m, "backend") and hasattr(m, "_resolve_backend"):
            m.backend = _backend(backend)
        if hasattr(m, "use_mem_eff_path"):
            m.use_mem_eff_path = fused


# ---------------------------------------------------------------- checks
def _compare(name: str, got: torch.Tensor, ref: torch.Tensor) -> dict:
    got, ref = got.detach().float(), ref.detach().float()
    diff = (got - ref).abs().max().item() if got.numel() else 0.0
    return {
        "check": name,
        "max abs diff": diff,
        "max abs ref": ref.abs().max().item() if ref.numel() else 0.0,
        "allclose 1e-3": bool(torch.allclose(got, ref, rtol=1e-3, atol=1e-3)),
    }


def tolerance(ref_peak: float, dtype: torch.dtype, grad: bool = False) -> float:
    """The bar ``c * u * max|ref|`` of a ``dtype`` result (see ``TOL_FACTOR``).

    Example
    -------
    >>> tolerance(2.0, torch.bfloat16) == 8 * 2**-8 * 2.0
    True
    >>> tolerance(2.0, torch.bfloat16, grad=True) == 32 * 2**-8 * 2.0
    True
    """
    return TOL_FACTOR["grad" if grad else "output"] * torch.finfo(dtype).eps / 2 * ref_peak


def _compare_scaled(name: str, got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, grad: bool = False) -> dict:
    got, ref = got.detach().float(), ref.detach().float()
    diff = (got - ref).abs().max().item() if got.numel() else 0.0
    peak = ref.abs().max().item() if ref.numel() else 0.0
    tol = tolerance(peak, dtype, grad)
    # NaN fails: a comparison with NaN is False
    return {"check": name, "max abs diff": diff, "max abs ref": peak, "tol": tol, "within tol": diff <= tol}


def passed(row: dict) -> bool:
    """Whether a check row met its bar (fp32: ``allclose 1e-3``, else ``within tol``)."""
    return row["allclose 1e-3"] if "allclose 1e-3" in row else row["within tol"]


def _same_weights(ref: torch.nn.Module, candidate: torch.nn.Module, dtype: torch.dtype) -> None:
    """Give ``candidate``, cast to ``dtype``, the weights of ``ref``, rounded to ``dtype`` values first (ref keeps fp32)."""
    if dtype != torch.float32:
        with torch.no_grad():
            for t in itertools.chain(ref.parameters(), ref.buffers()):
                if t.is_floating_point():
                    t.copy_(t.to(dtype))
        candidate.to(dtype)
    candidate.load_state_dict(ref.state_dict())  # the same weights, strictly


class _PrintedRows(list):
    """Check rows, each also printed to stderr as it comes: a run cut short by a timeout still shows them."""

    def append(self, row: dict) -> None:
        super().append(row)
        print("check:", _row_line(row), file=sys.stderr, flush=True)


def _grads(module: torch.nn.Module, x: torch.Tensor, call: Callable, g: torch.Tensor):
    module.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    y = call(module, x)
    y.backward(g)
    return y.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


def run_checks(s: Sizes, T: int, info: dict, dtype: torch.dtype = torch.float32, candidate: str = "mamba_ssm") -> List[dict]:
    """Rows comparing ``candidate`` ("mamba_ssm": the kernels, or "torch") in ``dtype`` with our path in fp32.

    In fp32 the rows' bar is ``allclose(rtol=1e-3, atol=1e-3)``; in a lower
    precision both sides hold the same ``dtype``-rounded weights and input (the
    reference in fp32) and the bar is ``tolerance``.
    """
    rows: List[dict] = _PrintedRows()
    dev = DEVICE
    low = dtype != torch.float32
    compare = functools.partial(_compare_scaled, dtype=dtype) if low else _compare
    kern = candidate == "mamba_ssm"
    engine = "kernels" if kern else "torch"
    torch.manual_seed(1)
    x = torch.randn(2, T, s.d_model, device=dev)
    ref_m = mamba2(s, 256, "torch")
    ker_m = mamba2(s, 256, candidate, seed=1)
    _same_weights(ref_m, ker_m, dtype)
    x = x.to(dtype).float()  # x itself in fp32
    xk = x.to(dtype)  # the candidate's input
    with torch.no_grad():
        y_ref = ref_m(x)
        fused = kern and bool(info.get("causal_conv1d (fused Mamba2 path)"))
        first = f"kernels {'fused' if fused else 'unfused'}" if kern else "torch"
        rows.append(compare(f"Mamba2 fwd T={T}, {first}", ker_m(xk), y_ref))
        full = torch.full((2,), T, device=dev)
        given = "kernels unfused" if kern else "torch"
        rows.append(compare(f"Mamba2 fwd T={T}, {given} (lengths given)", ker_m(xk, full), y_ref))
        # padding: valid frames equal each sequence run alone; padded frames 0
        short = T - T // 4 - 1  # not a multiple of the chunk
        lengths = torch.tensor([T, short], device=dev)
        y_pad = ker_m(xk, lengths)
        alone = ref_m(x[1:, :short])
        rows.append(compare("Mamba2 padded batch: valid frames vs sequence alone (torch)", y_pad[1, :short], alone[0]))
        rows.append(compare("Mamba2 padded batch: padded frames == 0", y_pad[1, short:], torch.zeros_like(y_pad[1, short:])))
        # state carried over three pieces (candidate) vs one pass (torch)
        cuts = [0, T // 3 + 5, 2 * T // 3 - 11, T]
        state, pieces = None, []
        for a, b in zip(cuts[:-1], cuts[1:]):
            y_piece, state = ker_m(xk[:, a:b], state=state, return_state=True)
            pieces.append(y_piece)
        rows.append(compare(f"Mamba2 3 pieces with carried state ({engine}) vs one pass", torch.cat(pieces, 1), y_ref))
        _, final_ref = ref_m(x, return_state=True)
        rows.append(compare(f"Mamba2 final SSM state ({engine}, pieces) vs torch", state.ssm, final_ref.ssm))
    # gradients, input and parameters
    g = torch.randn_like(y_ref).to(dtype).float()
    grad_compare = functools.partial(compare, grad=True) if low else compare
    for label, fused_flag in ((("unfused", False), ("fused", True)) if kern else (("torch", False),)):
        if fused_flag and not fused:
            continue
        if kern:
            set_backend(ker_m, "mamba_ssm", fused=fused_flag)
        call = lambda m, inp: m(inp)  # noqa: E731
        _, gx_ref, gp_ref = _grads(ref_m, x, call, g)
        _, gx, gp = _grads(ker_m, xk, call, g.to(dtype))
        rows.append(grad_compare(f"Mamba2 grad x ({label})", gx, gx_ref))
        worst = max(gp, key=lambda n: (gp[n].float() - gp_ref[n]).abs().max().item() / max(gp_ref[n].abs().max().item(), 1e-12))
        rows.append(grad_compare(f"Mamba2 grad {worst} (worst parameter, {label})", gp[worst], gp_ref[worst]))
    # BiMamba2 with padding
    with torch.no_grad():
        bi_ref, bi_ker = bimamba2(s, 256, "torch"), bimamba2(s, 256, candidate, seed=1)
        _same_weights(bi_ref, bi_ker, dtype)
        rows.append(compare(f"BiMamba2 padded batch, {engine} vs torch", bi_ker(xk, lengths), bi_ref(x, lengths)))
    # Mamba v1: the kernel only where selective_scan_cuda imports; our path always
    if not kern or info.get("selective_scan_cuda (Mamba v1)") is True:
        v_ref, v_ker = mamba1(s.d_model, "torch"), mamba1(s.d_model, candidate, seed=1)
        _same_weights(v_ref, v_ker, dtype)
        xs = x[:, : min(T, 2000)]
        call = lambda m, inp: m(inp)  # noqa: E731
        g1 = torch.randn_like(xs).to(dtype).float()
        y1_ref, gx1_ref, _ = _grads(v_ref, xs, call, g1)
        y1, gx1, _ = _grads(v_ker, xs.to(dtype), call, g1.to(dtype))
        rows.append(compare(f"Mamba v1 fwd ({'selective_scan_cuda' if kern else 'torch'} vs torch)", y1, y1_ref))
        rows.append(grad_compare("Mamba v1 grad x", gx1, gx1_ref))
        with torch.no_grad():
            v_len = torch.tensor([xs.shape[1], xs.shape[1] // 2 + 1], device=dev)
            y1_pad = v_ker(xs.to(dtype), v_len)
            rows.append(compare(f"Mamba v1 padded ({'kernel' if kern else 'torch'}) vs torch", y1_pad, v_ref(xs, v_len)))
    return list(rows)


# --------------------------------------------------------------- timings
def cuda_ms(fn: Callable[[], None], repeats: int, warmup: int = 3, device: Optional[str] = None) -> float:
    """Median milliseconds of ``fn`` by CUDA events, after ``warmup`` calls (wall clock off CUDA).

    ``device``: ``"cuda"`` or ``"cpu"``; default this module's ``DEVICE``.
    """
    for _ in range(warmup):
        fn()
    if (device or DEVICE) != "cuda":
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
        return statistics.median(times)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure(
    module: torch.nn.Module, batch: int, T: int, d_model: int, repeats: int, dtype: torch.dtype = torch.float32
) -> dict:
    x = torch.randn(batch, T, d_model, device=DEVICE, dtype=dtype)
    cuda = DEVICE == "cuda"
    if cuda:
        torch.cuda.synchronize()
    base = torch.cuda.memory_allocated() if cuda else 0
    row: dict = {}

    def fwd():
        with torch.no_grad():
            module(x)

    xg = x.detach().requires_grad_(True)

    def train():
        module(xg).sum().backward()
        module.zero_grad(set_to_none=True)

    for key, fn in (("fwd", fwd), ("fwd+bwd", train)):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            row[f"{key} ms"] = cuda_ms(fn, repeats)
            row[f"{key} peak MB"] = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else None
        except torch.cuda.OutOfMemoryError:
            row[f"{key} ms"] = row[f"{key} peak MB"] = "OOM"
            torch.cuda.empty_cache()
    return row


def run_timings(
    s: Sizes, lengths: List[int], batches: List[int], repeats: int, info: dict, dtype: torch.dtype = torch.float32
) -> List[dict]:
    fused = bool(info.get("causal_conv1d (fused Mamba2 path)"))
    models: Dict[str, Callable[[], torch.nn.Module]] = {
        "BiMamba2 ours (torch, chunk 64)": lambda: bimamba2(s, 64, "torch"),
        "BiMamba2 ours (torch, chunk 256)": lambda: bimamba2(s, 256, "torch"),
        "BiMamba2 mamba_ssm kernels (unfused)": lambda: _unfused(bimamba2(s, 256, "mamba_ssm")),
    }
    if fused:
        models["BiMamba2 mamba_ssm kernels (fused)"] = lambda: bimamba2(s, 256, "mamba_ssm")
    models["SDPA attention"] = lambda: SDPAAttention(s.d_model, s.heads).to(DEVICE)
    v1 = info.get("selective_scan_cuda (Mamba v1)") is True
    rows = []
    for batch in batches:
        for T in lengths:
            if batch > 1 and T > 12000:
                continue
            todo = list(models.items())
            if v1 and batch == 1 and T <= 12000:
                todo += [
                    (f"Mamba v1 d_state 16 expand 2 ({backend})", lambda b=backend: mamba1(s.d_model, b))
                    for backend in ("torch", "mamba_ssm")
                ]
            for name, build in todo:
                module = build()
                if dtype != torch.float32:
                    module.to(dtype)
                row = {"model": name, "B": batch, "T": T}
                row.update(measure(module, batch, T, s.d_model, repeats, dtype))
                rows.append(row)
                print(_row_line(row), flush=True)
                del module
                if DEVICE == "cuda":
                    torch.cuda.empty_cache()
    return rows


def _unfused(module: torch.nn.Module) -> torch.nn.Module:
    set_backend(module, "mamba_ssm", fused=False)
    return module


# ---------------------------------------------------------------- output
def _fmt(v, digits=2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "**NO**"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 0.01 else f"{v:,.{digits}f}"
    return str(v)


def _row_line(row: dict) -> str:
    return " | ".join(_fmt(v) for v in row.values())


def table(rows: List[dict]) -> str:
    if not rows:
        return "(none)\n"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def report_stem(dtype: str = "float32", triton_f32: Optional[str] = None) -> str:
    """File name (less the suffix) of the report: one per dtype and Triton fp32 setting.

    The defaults (fp32, ``TRITON_F32_DEFAULT`` unset) keep ``mixers_cuda``, the
    name of the TF32 record in docs/bench; any other run gets its own name.

    Example
    -------
    >>> report_stem()
    'mixers_cuda'
    >>> report_stem("bfloat16")
    'mixers_cuda_bf16'
    >>> report_stem("float32", "ieee")
    'mixers_cuda_ieee'
    >>> report_stem("bfloat16", "ieee")
    'mixers_cuda_bf16_ieee'
    """
    stem = "mixers_cuda" + {"float32": "", "bfloat16": "_bf16"}[dtype]
    if triton_f32:
        stem += "_" + re.sub(r"[^A-Za-z0-9]+", "-", triton_f32)
    return stem


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[3000, 12000, 48000])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--check-length", type=int, default=3000)
    parser.add_argument("--checks-only", action="store_true")
    parser.add_argument("--triton-only", action="store_true", help="import mamba_ssm without its __init__")
    parser.add_argument(
        "--dtype", choices=list(DTYPES), default="float32",
        help="modules and inputs in this dtype; bfloat16: compared with our path in fp32",
    )
    parser.add_argument(
        "--out", default="",
        help="folder for mixers_cuda[_bf16][_<TRITON_F32_DEFAULT>].md / .json ('' = print only)",
    )
    parser.add_argument("--dry-run-cpu", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global DEVICE, KERNELS
    if args.dry_run_cpu:  # this script's logic only: torch on both sides, tiny sizes
        DEVICE, KERNELS = "cpu", "torch"
    elif not torch.cuda.is_available():
        print("mixers_cuda: no CUDA device; this benchmark needs one", file=sys.stderr)
        return 2
    dtype = DTYPES[args.dtype]
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "none (dry run)",
        "torch": torch.__version__,
        "TRITON_F32_DEFAULT": os.environ.get("TRITON_F32_DEFAULT", "unset (tf32 in the kernels' dots)"),
        "torch matmul TF32": torch.backends.cuda.matmul.allow_tf32,
    }
    if dtype != torch.float32:  # the fp32 header stays as it was
        info["dtype"] = f"{args.dtype} (modules and inputs; the reference: our path in float32)"
        info["torch matmul bf16 reduced-precision reduction"] = (
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
        )
    if args.dry_run_cpu:
        info.update({"causal_conv1d (fused Mamba2 path)": False, "selective_scan_cuda (Mamba v1)": True})
        s = Sizes(d_model=64, heads=4, d_state=16, headdim=16)
    else:
        info.update(load_mamba_ssm(args.triton_only))
        s = Sizes()
    header = "\n".join(f"- {k}: {v}" for k, v in info.items())
    print(header, flush=True)
    sections = [f"Command: `python -m speechbrain_cald.bench.mixers_cuda {' '.join(argv or sys.argv[1:])}`\n", header, ""]
    failed = False
    if dtype == torch.float32:
        try:
            checks = run_checks(s, args.check_length, info)
        except Exception:
            traceback.print_exc()
            checks = []
        sections += ["## Checks (fp32, same weights)", "", table(checks)]
    else:
        # (a) our path, (b) the kernels, each in the low dtype against our path in fp32
        checks = []
        for candidate in ("torch", "mamba_ssm"):
            try:
                checks += [{"candidate": f"{candidate} {args.dtype}", **row}
                           for row in run_checks(s, args.check_length, info, dtype, candidate)]
            except Exception:
                traceback.print_exc()
                failed = True
        unit = f"2^{int(math.log2(torch.finfo(dtype).eps / 2))}"
        sections += [
            f"## Checks ({args.dtype} vs our path in float32, same weights; "
            f"tol = c * {unit} * max abs ref, c = {TOL_FACTOR['output']:g} outputs, {TOL_FACTOR['grad']:g} gradients)",
            "",
            f"Both sides hold the same {args.dtype}-rounded weights and input, the reference in float32; "
            f"{unit} is half of {args.dtype}'s eps (its unit roundoff).",
            "",
            table(checks),
        ]
    print(table(checks), flush=True)
    timings: List[dict] = []
    if not args.checks_only:
        try:
            timings = run_timings(s, args.lengths, args.batches, args.repeats, info, dtype)
        except Exception:
            traceback.print_exc()
        precision = "fp32" if dtype == torch.float32 else args.dtype
        sections += [f"## Timings ({precision}, CUDA events, median)", "", table(timings)]
        print(table(timings), flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = report_stem(args.dtype, os.environ.get("TRITON_F32_DEFAULT"))
        (out / f"{stem}.md").write_text("\n".join(sections))
        (out / f"{stem}.json").write_text(json.dumps({"info": info, "checks": checks, "timings": timings}, indent=1, default=str))
    return 0 if checks and not failed and all(passed(r) for r in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
