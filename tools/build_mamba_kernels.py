"""Build the CUDA extensions of mamba_ssm and causal_conv1d for the visible GPU only.

Their sdists compile every kernel for eight or more GPU architectures, which
takes far longer than a short lease of a GPU machine; PyTorch's just-in-time
builder (``torch.utils.cpp_extension.load``) compiles them for the visible
GPU's architecture alone, in parallel (ninja). The built modules
(``selective_scan_cuda.so``, ``causal_conv1d_cuda.so``) land in
``OUT/<name>/``; put those folders on ``PYTHONPATH`` together with the
packages' Python sources to use them. This is how the GPU comparison in
``docs/bench/mixers_cuda.md`` was run on a machine without internet access;
with internet, ``pip install mamba-ssm causal-conv1d`` (prebuilt wheels) is
the normal route.

Usage::

    python tools/build_mamba_kernels.py --mamba-src mamba_ssm-X/ \\
        --causal-conv1d-src causal_conv1d-Y/ --out /tmp/kernels [--only causal_conv1d_cuda]

Each extension is built in its own process; a failure is reported and the
other build goes on. Exit status 0 when every requested build succeeded.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

# the flags of the packages' own setup.py (nvcc side), minus the architecture
# list (the builder targets the visible GPU) and the C++ standard (PyTorch's
# builder sets the one its headers need)
_NVCC_FLAGS = [
    "-O3",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__",
    "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr",
    "--expt-extended-lambda",
    "--use_fast_math",
]


def extensions(mamba_src: Path, conv_src: Path) -> Dict[str, List[Path]]:
    """Extension name -> source files, as the packages' setup.py list them."""
    scan = mamba_src / "csrc" / "selective_scan"
    kinds = ["fwd_fp32", "fwd_fp16", "fwd_bf16"] + [
        f"bwd_{t}_{k}" for t in ("fp32", "fp16", "bf16") for k in ("real", "complex")
    ]
    return {
        "selective_scan_cuda": [scan / "selective_scan.cpp"]
        + [scan / f"selective_scan_{k}.cu" for k in kinds],
        "causal_conv1d_cuda": [conv_src / "csrc" / n for n in (
            "causal_conv1d.cpp", "causal_conv1d_fwd.cu", "causal_conv1d_bwd.cu", "causal_conv1d_update.cu",
        )],
    }


def _build(name: str, sources: List[Path], out: Path) -> None:
    from torch.utils.cpp_extension import load

    build_dir = out / name
    build_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    load(
        name=name,
        sources=[str(s) for s in sources],
        extra_cflags=["-O3"],
        extra_cuda_cflags=_NVCC_FLAGS,
        extra_include_paths=[str(sources[0].parent)],
        build_directory=str(build_dir),
        verbose=False,
    )
    print(f"built {name} in {time.time() - t0:.0f} s -> {build_dir}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mamba-src", type=Path, required=True, help="unpacked mamba_ssm sdist")
    parser.add_argument("--causal-conv1d-src", type=Path, required=True, help="unpacked causal_conv1d sdist")
    parser.add_argument("--out", type=Path, required=True, help="build folder (one sub-folder per extension)")
    parser.add_argument("--only", nargs="+", help="extension names to build (default: all)")
    args = parser.parse_args(argv)
    exts = extensions(args.mamba_src, args.causal_conv1d_src)
    names = args.only or list(exts)
    for name in names:
        if name not in exts:
            parser.error(f"--only: unknown extension '{name}', expected one of {sorted(exts)}")
        missing = [str(s) for s in exts[name] if not s.is_file()]
        if missing:
            parser.error(f"{name}: source files not found: {missing}")
    os.environ.setdefault("MAX_JOBS", str(max(1, (os.cpu_count() or 2) // len(names))))
    procs = {n: mp.get_context("spawn").Process(target=_build, args=(n, exts[n], args.out)) for n in names}
    for p in procs.values():
        p.start()
    failed = []
    for name, p in procs.items():
        p.join()
        if p.exitcode != 0:
            failed.append(name)
            print(f"FAILED to build {name} (exit {p.exitcode})", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
