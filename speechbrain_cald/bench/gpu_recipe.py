"""One GPU, one call: the LibriSpeech recipe in bf16 on the mamba_ssm kernels, and what the students buy there.

Steps, in order, each reported (the report is rewritten after every step, so a
run cut short keeps what it did):

1. **kernels**: whether ``mamba_ssm`` (whose package ``__init__`` needs its
   compiled ``selective_scan_cuda``) imports; if not, ``--kernel-src DIR``
   (mamba_ssm's and causal_conv1d's sdists, ``.tar.gz`` or unpacked) is built
   for the one GPU present with ``tools/build_mamba_kernels.py``
   (``selective_scan_cuda``; ``causal_conv1d_cuda`` too with
   ``--causal-conv1d``: the fused conv + scan kernel, a longer build), the
   packages' sources and the built modules go on ``PYTHONPATH`` (this process
   and the recipe's), and the import is checked again. The report says which
   happened (already importable, or built, with the build's time).
2. **recipe**: a tiny LibriSpeech in the distributed layout (espeak-ng speech,
   or :func:`testing.speech.tone_speech` where espeak-ng is missing) and a
   tiny random wav2vec2, written on the spot, then ``./run.sh --recipe
   LibriSpeech/ASR`` stages 0-4 with the smoke settings of
   ``testing.recipes`` and ``--precision=bf16`` for teacher and students, in a
   subprocess. The students' mixers are built with ``backend: auto``; their
   log line (``nnet.mamba2``: "Mamba2 backend auto: cuda inputs -> ...") must
   say the mamba_ssm kernels ran: asserted.
3. **training steps** and 4. **inference** of a wav2vec2-base-sized teacher and
   its BiMamba2 and Linformer students (``bench.speech_encoders``): fp32 and
   bf16 autocast, 5 / 15 / 35 s utterances in batches of 200 s of audio, and
   one recording of 30 s, 2, 10 and 30 minutes; a CUDA out-of-memory error is
   a result (``OOM``).

``--device cpu --tiny`` is the dry run the test suite runs: tiny sizes, lengths
scaled down, recipe stage 0 only (stages 0-4 run end to end in
``tests/recipes/test_librispeech_asr.py``); the GPU-only steps are reported as
skipped with the reason. ``--budget-s`` bounds the run: benchmark cases not
started in time are listed as not tried.

Writes ``gpu_recipe.md`` and ``gpu_recipe.json`` (and the recipe's log and
RESULTS.md) to ``--out``.

Usage::

    python -m speechbrain_cald.bench.gpu_recipe --out OUT [--kernel-src DIR] [--causal-conv1d]
        [--work DIR] [--budget-s 440]
    python -m speechbrain_cald.bench.gpu_recipe --device cpu --tiny --out OUT
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from speechbrain_cald.bench import speech_encoders
from speechbrain_cald.bench.mixers_cuda import table
from speechbrain_cald.bench.speech_encoders import BASE, TINY, EncoderSizes
from speechbrain_cald.testing import recipes as recipe_testing

logger = logging.getLogger(__name__)

STEM = "gpu_recipe"
RECIPE = "LibriSpeech/ASR"
KERNELS_LINE = re.compile(r"Mamba2 backend auto: (\w+) inputs -> (.*)")
STAGE_DONE = re.compile(r"== stage (\d+): (.*?): (done in ([\d.]+) s|skipped.*)")


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    sizes: EncoderSizes
    train_seconds: Tuple[float, ...]
    batch_seconds: float
    infer_seconds: Tuple[float, ...]
    precisions: Tuple[str, ...]
    stop_stage: int
    repeats: int


GPU_PLAN = Plan(BASE, (5.0, 15.0, 35.0), 200.0, (30.0, 120.0, 600.0, 1800.0), ("fp32", "bf16"), 4, 5)
# the dry run: lengths and batches scaled down, stage 0 only (stages 0-4: tests/recipes/test_librispeech_asr.py,
# minutes on 2 cores)
TINY_PLAN = Plan(TINY, (0.5, 1.5, 3.5), 7.0, (1.0, 4.0, 10.0, 30.0), ("fp32", "bf16"), 0, 1)


@dataclass
class Report:
    """Everything one run found, written as markdown and JSON after each step."""

    command: str
    info: Dict[str, object]
    steps: List[Dict[str, object]] = field(default_factory=list)
    recipe_stages: List[Dict[str, object]] = field(default_factory=list)
    train_steps: List[Dict[str, object]] = field(default_factory=list)
    inference: List[Dict[str, object]] = field(default_factory=list)

    def step(self, name: str, status: str, seconds: float, note: str) -> None:
        """Record a step: ``status`` is ``ok``, ``skipped`` or ``FAILED``."""
        self.steps.append({"step": name, "status": status, "time s": round(seconds, 1), "note": note})
        logger.info("step %s: %s (%.1f s) %s", name, status, seconds, note)

    @property
    def failed(self) -> bool:
        return any(s["status"] == "FAILED" for s in self.steps)

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{STEM}.json").write_text(json.dumps(asdict(self), indent=1, default=str))
        (out / f"{STEM}.md").write_text(to_markdown(self))


# ------------------------------------------------------------------ machine
def machine_info(device: str, plan: Plan) -> Dict[str, object]:
    """Date, device, versions and sizes for the report's header."""
    info: Dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({platform.processor() or platform.machine()}, "
                                                                        f"{os.cpu_count()} cores, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "CUDA": torch.version.cuda or "none (CPU build)",
        "python": platform.python_version(),
        "commit": _git_commit(),
        "encoder sizes": asdict(plan.sizes),
    }
    if device == "cuda":
        info["torch matmul TF32"] = torch.backends.cuda.matmul.allow_tf32
        info["cuDNN TF32 (convolutions)"] = torch.backends.cudnn.allow_tf32
    return info


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=recipe_testing.ROOT, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


# ------------------------------------------------------------------ kernels
# run in a fresh interpreter: a failed import of mamba_ssm leaves pieces of it in sys.modules
_PROBE = """
import json
info = {}
try:
    import mamba_ssm
    info["mamba_ssm"] = mamba_ssm.__version__
    from mamba_ssm.ops.triton import ssd_combined
    info["causal_conv1d (fused Mamba2 path)"] = ssd_combined.causal_conv1d_fwd_function is not None
except Exception as err:
    info["mamba_ssm"] = f"does not import ({type(err).__name__}: {err})"
try:
    import triton
    info["triton"] = triton.__version__
except Exception as err:
    info["triton"] = f"does not import ({type(err).__name__})"
print(json.dumps(info))
"""


def probe_kernels(extra_paths: Sequence[str] = ()) -> Dict[str, object]:
    """What ``import mamba_ssm`` gives in a fresh interpreter with ``extra_paths`` first on ``PYTHONPATH``.

    Example
    -------
    >>> sorted(probe_kernels())
    ['mamba_ssm', 'triton']
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*extra_paths, *filter(None, [env.get("PYTHONPATH")])])
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300)
    if out.returncode != 0:
        return {"mamba_ssm": f"probe failed: {out.stderr.strip()[-500:]}", "triton": "unknown"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def kernels_import(info: Dict[str, object]) -> bool:
    """Whether a probe found mamba_ssm importable (with its Triton SSD kernels).

    Example
    -------
    >>> kernels_import({"mamba_ssm": "2.3.2.post1", "causal_conv1d (fused Mamba2 path)": False})
    True
    >>> kernels_import({"mamba_ssm": "does not import (ImportError: x)"})
    False
    """
    return "causal_conv1d (fused Mamba2 path)" in info


def unpacked_source(src: Path, name: str, work: Path) -> Path:
    """The unpacked sdist of ``name`` (``mamba_ssm``, ``causal_conv1d``) found in ``src``, unpacked under ``work``."""
    for path in sorted(src.glob(f"{name}-*")):
        if path.is_dir() and (path / "setup.py").exists():
            return path
        if path.name.endswith(".tar.gz"):
            with tarfile.open(path) as tar:
                top = tar.getnames()[0].split("/")[0]
                tar.extractall(work, filter="data")
            return work / top
    raise FileNotFoundError(
        f"--kernel-src {src}: no {name}-<version>.tar.gz or unpacked {name}-<version>/ folder there "
        f"(see the README's GPU section: `pip download --no-deps --no-binary :all: mamba-ssm causal-conv1d`)"
    )


def triton_only_shim(mamba_src: Path, work: Path) -> Path:
    """A folder holding a ``mamba_ssm`` package whose ``__init__`` only points at the real one's modules.

    mamba_ssm's own ``__init__`` imports its compiled selective-scan extension
    (Mamba v1) and its model classes; the Mamba2 path needs neither, only the
    Triton modules (``mamba_ssm.ops.triton``), which compile themselves on first
    use. Put the returned folder first on ``PYTHONPATH`` (as ``bench.mixers_cuda
    --triton-only`` does in one process, here for the recipe's processes too).

    Example
    -------
    >>> import tempfile
    >>> src = Path(tempfile.mkdtemp())
    >>> (src / "mamba_ssm").mkdir()
    >>> _ = (src / "mamba_ssm" / "__init__.py").write_text('__version__ = "9.9"\\nimport selective_scan_cuda\\n')
    >>> shim = triton_only_shim(src, Path(tempfile.mkdtemp()))
    >>> "9.9" in (shim / "mamba_ssm" / "__init__.py").read_text()
    True
    """
    real = mamba_src / "mamba_ssm"
    version = next((ln.split("=")[-1].strip().strip("\"'") for ln in (real / "__init__.py").read_text().splitlines()
                    if ln.startswith("__version__")), "unknown")
    pkg = work / "triton_only" / "mamba_ssm"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(
        '"""mamba_ssm\'s modules without its package __init__ (written by speechbrain_cald.bench.gpu_recipe)."""\n'
        f"__path__ = [{str(real)!r}]\n__version__ = {version + ' (Triton modules only)'!r}\n"
    )
    return pkg.parent


def _use_paths(paths: Sequence[str]) -> None:
    """Put ``paths`` first on ``PYTHONPATH`` (the recipe's processes) and ``sys.path`` (this one)."""
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.path[:0] = paths


def _build_kernels(mamba_src: Path, conv_src: Path, names: Sequence[str], work: Path, timeout_s: float) -> str:
    """``tools/build_mamba_kernels.py --only NAMES`` into ``work/kernels``; its log (also in ``work/kernel_build.log``)."""
    cmd = [sys.executable, str(recipe_testing.ROOT / "tools" / "build_mamba_kernels.py"), "--mamba-src", str(mamba_src),
           "--causal-conv1d-src", str(conv_src), "--out", str(work / "kernels"), "--only", *names]
    logger.info("+ %s", " ".join(cmd))
    try:
        built = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        log = built.stdout + built.stderr
    except subprocess.TimeoutExpired:
        log = f"timed out after {timeout_s:.0f} s"
    (work / "kernel_build.log").write_text(log)
    return "; ".join(ln for ln in log.splitlines() if ln.startswith(("built", "FAILED", "timed out"))) or "no output"


def kernel_step(report: Report, device: str, kernel_src: Optional[Path], with_conv: bool, work: Path,
                timeout_s: float, triton_only: bool = False) -> List[str]:
    """Make the mamba_ssm kernels importable; the ``PYTHONPATH`` entries it added.

    In order: mamba_ssm as installed; else built from ``kernel_src`` (its
    compiled module, for the package's ``__init__``; ``causal_conv1d_cuda`` too
    with ``with_conv``); else, or with ``triton_only``, its Triton modules
    through :func:`triton_only_shim`. The step's note says which.
    """
    t0 = time.monotonic()
    found = probe_kernels()
    report.info["mamba_ssm (before)"] = found["mamba_ssm"]
    report.info["triton"] = found["triton"]
    if device != "cuda":
        report.step("kernels", "skipped", time.monotonic() - t0,
                    "no GPU (--device cpu): mamba_ssm's kernels are CUDA-only, not built; the mixers take their "
                    f"plain-PyTorch path (mamba_ssm here: {found['mamba_ssm']})")
        return []

    def done(info: Dict[str, object], paths: List[str], how: str) -> List[str]:
        report.info["mamba_ssm"] = info["mamba_ssm"]
        report.info["causal_conv1d (fused Mamba2 path)"] = info["causal_conv1d (fused Mamba2 path)"]
        _use_paths(paths)
        report.step("kernels", "ok", time.monotonic() - t0, how)
        return paths

    if kernels_import(found):
        return done(found, [], "mamba_ssm imports as installed: nothing built")
    if kernel_src is None:
        report.step("kernels", "FAILED", time.monotonic() - t0,
                    f"mamba_ssm does not import ({found['mamba_ssm']}) and no --kernel-src DIR to build it from")
        return []
    mamba_src = unpacked_source(kernel_src, "mamba_ssm", work / "src")
    conv_src = unpacked_source(kernel_src, "causal_conv1d", work / "src")
    why_not_built = "--triton-only: nothing built"
    if not triton_only:
        names = ["selective_scan_cuda"] + (["causal_conv1d_cuda"] if with_conv else [])
        built = _build_kernels(mamba_src, conv_src, names, work, timeout_s)
        paths = [str(mamba_src), str(work / "kernels" / "selective_scan_cuda")]
        if with_conv and (work / "kernels" / "causal_conv1d_cuda" / "causal_conv1d_cuda.so").exists():
            paths += [str(conv_src), str(work / "kernels" / "causal_conv1d_cuda")]
        after = probe_kernels(paths)
        if kernels_import(after):
            return done(after, paths, f"built for this GPU by tools/build_mamba_kernels.py --only {' '.join(names)} "
                                      f"({built}); mamba_ssm imports from its sources + the built modules")
        why_not_built = f"built ({built}), but the package does not import: {after['mamba_ssm']}"
    shim = [str(triton_only_shim(mamba_src, work))]
    after = probe_kernels(shim)
    if kernels_import(after):
        return done(after, shim, f"{why_not_built}; mamba_ssm's Triton modules through a shim package "
                                 "(its __init__ skipped; no Mamba v1 or causal_conv1d kernels)")
    report.step("kernels", "FAILED", time.monotonic() - t0,
                f"{why_not_built}; not even its Triton modules import: {after['mamba_ssm']}")
    return []


# ------------------------------------------------------------------ recipe
def _synth() -> str:
    from speechbrain_cald.data.espeak import EspeakMissingError, espeak_binary

    try:
        espeak_binary()
        return "espeak"
    except EspeakMissingError:
        return "tones"


def recipe_command(data: Path, model: Path, exp: Path, stop_stage: int, precision: str) -> List[str]:
    """``bash run.sh --skip-setup --recipe LibriSpeech/ASR`` stages 0..``stop_stage`` with the smoke settings.

    Example
    -------
    >>> cmd = recipe_command(Path("D"), Path("M"), Path("E"), 4, "bf16")
    >>> cmd[2:6], cmd[cmd.index("--teacher_args") + 1].endswith("--precision=bf16")
    (['--skip-setup', '--recipe', 'LibriSpeech/ASR', '--stage'], True)
    """
    bf16 = " --precision=bf16" if precision == "bf16" else ""
    return ["bash", str(recipe_testing.ROOT / "run.sh"), "--skip-setup", "--recipe", RECIPE, "--stage", "0",
            "--stop_stage", str(stop_stage), "--data_folder", str(data), "--pretrained_dir", str(model),
            "--exp", str(exp), "--results_md", str(exp / "RESULTS.md"),
            "--teacher_args", recipe_testing.TEACHER_ARGS + bf16, "--student_args", recipe_testing.STUDENT_ARGS + bf16,
            "--eval_args", recipe_testing.EVAL_ARGS]


def stages_in_log(log: str) -> List[Dict[str, object]]:
    """The stage lines of a run.sh log: ``stage``, ``title``, ``done in s`` (or the skip)."""
    rows = []
    for m in STAGE_DONE.finditer(log):
        rows.append({"stage": int(m.group(1)), "title": m.group(2),
                     "time s": float(m.group(4)) if m.group(4) else m.group(3)})
    return rows


def backend_lines(log: str) -> List[Tuple[str, str]]:
    """``(device type, path)`` of every "Mamba2 backend auto" line in a log.

    Example
    -------
    >>> backend_lines("x\\nspeechbrain_cald.nnet.mamba2 - Mamba2 backend auto: cuda inputs -> mamba_ssm kernels (y)\\n")
    [('cuda', 'mamba_ssm kernels (y)')]
    """
    return [(m.group(1), m.group(2).strip()) for m in KERNELS_LINE.finditer(log)]


def recipe_step(report: Report, plan: Plan, device: str, work: Path, out: Path, timeout_s: float,
                synth: str) -> None:
    """Write the tiny corpus (``synth``: ``espeak`` or ``tones``) and model, run the recipe's stages, check them."""
    from speechbrain_cald.testing.speech import save_tiny_speech_model, write_librispeech

    t0 = time.monotonic()
    spec = recipe_testing.SMOKE_CORPORA[RECIPE]
    data, model, exp = work / "LibriSpeech", work / "w2v2", work / "exp"
    if not data.is_dir():
        write_librispeech(str(data), spec["splits"], synth=synth)
    if not model.is_dir():
        save_tiny_speech_model(str(model), "wav2vec2")
    report.step("corpus", "ok", time.monotonic() - t0,
                f"tiny LibriSpeech ({', '.join(f'{k} {v}' for k, v in spec['splits'].items())} utterances, "
                f"{'espeak-ng speech' if synth == 'espeak' else 'tones (no espeak-ng here)'}) and a tiny random wav2vec2")
    precision = "bf16" if device == "cuda" else "fp32"
    cmd = recipe_command(data, model, exp, plan.stop_stage, precision)
    report.info["recipe command"] = " ".join(cmd)
    t1 = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=recipe_testing.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout_s)
        log, rc = proc.stdout.decode(errors="replace"), proc.returncode
    except subprocess.TimeoutExpired as err:
        log, rc = (err.stdout or b"").decode(errors="replace"), f"timed out after {timeout_s:.0f} s"
    (out / f"{STEM}_recipe.log").write_text(log)
    if (exp / "RESULTS.md").exists():
        shutil.copy(exp / "RESULTS.md", out / f"{STEM}_RESULTS.md")
    report.recipe_stages = stages_in_log(log)
    done = {r["stage"] for r in report.recipe_stages if isinstance(r["time s"], float)}
    wanted = set(range(plan.stop_stage + 1))
    ok = rc == 0 and wanted <= done
    note = f"stages {sorted(done)} of {sorted(wanted)}, exit {rc}, precision {precision}; log: {STEM}_recipe.log"
    report.step(f"recipe stages 0-{plan.stop_stage}", "ok" if ok else "FAILED", time.monotonic() - t1, note)
    if plan.stop_stage < 4:
        report.step(f"recipe stages {plan.stop_stage + 1}-4", "skipped", 0.0,
                    "--tiny: run end to end by tests/recipes/test_librispeech_asr.py (minutes on 2 CPU cores, "
                    "too slow for a dry run)")
    check_kernels_in_log(report, device, log, students_ran=plan.stop_stage >= 3)


def check_kernels_in_log(report: Report, device: str, log: str, students_ran: bool) -> None:
    """Assert from the recipe's log that its BiMamba2 students ran on the mamba_ssm kernels (on a GPU)."""
    lines = backend_lines(log)
    report.info["recipe Mamba2 backend lines"] = sorted({f"{d} -> {p}" for d, p in lines})
    if device != "cuda":
        report.step("kernels used by the recipe (assert)", "skipped", 0.0,
                    "no GPU: the kernels run only on CUDA inputs (on a CPU backend auto takes the plain-PyTorch path)")
        return
    if not students_ran:
        report.step("kernels used by the recipe (assert)", "skipped", 0.0, "the students' stage (3) was not run")
        return
    on_cuda = [p for d, p in lines if d == "cuda"]
    ok = bool(on_cuda) and all(p.startswith("mamba_ssm") for p in on_cuda)
    report.step("kernels used by the recipe (assert)", "ok" if ok else "FAILED", 0.0,
                f"Mamba2 backend auto on cuda inputs: {sorted(set(on_cuda)) or 'no such line in the log'}")


# ------------------------------------------------------------------ benchmarks
def bench_step(report: Report, plan: Plan, device: str, deadline: float, out: Path) -> None:
    """Training steps, then inference, of the base-sized teacher and its students, within ``deadline``."""
    t0 = time.monotonic()
    train_deadline = t0 + 0.5 * max(0.0, deadline - t0)
    report.train_steps = speech_encoders.measure_train_steps(
        plan.sizes, device, plan.train_seconds, plan.batch_seconds, plan.precisions, plan.repeats,
        deadline=train_deadline)
    report.step("training steps", "ok", time.monotonic() - t0, _counts(report.train_steps))
    backends = sorted({str(r["backend"]) for r in report.train_steps if r["model"] == "BiMamba2 student"})
    if device == "cuda":
        report.step("kernels used by the benchmark's BiMamba2 (assert)", "ok" if backends == ["mamba_ssm"] else "FAILED",
                    0.0, f"backend auto resolves to {backends} for cuda inputs")
    else:
        report.step("kernels used by the benchmark's BiMamba2 (assert)", "skipped", 0.0,
                    f"no GPU: the BiMamba2 rows run the plain-PyTorch path ({backends}); their bf16 rows are CPU "
                    "autocast, not the bf16 kernels")
    report.write(out)
    t1 = time.monotonic()
    report.inference = speech_encoders.measure_inference(
        plan.sizes, device, plan.infer_seconds, plan.precisions, max(1, plan.repeats - 2), deadline=deadline)
    report.step("inference", "ok", time.monotonic() - t1, _counts(report.inference))


def _counts(rows: Sequence[Dict[str, object]]) -> str:
    measured = sum(r.get("status") == "ok" for r in rows)
    oom = sum(r.get("ms") == speech_encoders.OOM for r in rows)
    return f"{measured} measured, {oom} OOM, {len(rows) - measured - oom} not tried"


# ------------------------------------------------------------------ report
def _with_ratio(rows: Sequence[Dict[str, object]], keys: Sequence[str]) -> List[Dict[str, object]]:
    """Rows in ``keys`` order, each with its time over the teacher's at the same precision and length."""
    teacher = {(r["precision"], r["seconds"]): r.get("ms") for r in rows if r["model"] == "teacher"}
    out = []
    for r in rows:
        ms, ref = r.get("ms"), teacher.get((r["precision"], r["seconds"]))
        ratio = ms / ref if isinstance(ms, float) and isinstance(ref, float) and r["model"] != "teacher" else ""
        out.append({**{k: r.get(k, "") for k in keys}, "time / teacher": ratio})
    return out


def to_markdown(report: Report) -> str:
    """The report in the form of ``docs/bench/*.md``: command, machine header, one table per step."""
    header = "\n".join(f"- {k}: {v}" for k, v in report.info.items())
    train_keys = ["model", "precision", "seconds", "batch", "ms", "peak MB", "backend", "status"]
    infer_keys = ["model", "precision", "seconds", "frames", "ms", "peak MB", "backend", "status"]
    return "\n".join([
        "# The LibriSpeech recipe on one GPU, and what the linear-time students buy there",
        "",
        f"Command: `{report.command}`",
        "",
        header,
        "",
        "## Steps",
        "",
        table(report.steps),
        "## Recipe stages (run.sh's own times)",
        "",
        table(report.recipe_stages),
        "## Training step (forward, CTC loss, backward, AdamW step)",
        "",
        "Batches of `batch` utterances of `seconds` each (200 s of audio a batch at full size). "
        "`teacher forward (no grad)`: what a CALD student's step adds for its layer targets. "
        "peak MB: peak allocated GPU memory over the timed steps, weights and optimizer state included "
        "(CPU: rise of the resident set).",
        "",
        table(_with_ratio(report.train_steps, train_keys)),
        "## Encoder inference (batch 1, no grad, with the CTC head)",
        "",
        "peak MB: peak allocated GPU memory over the timed calls, weights included (CPU: rise of the resident set). "
        "OOM: CUDA out of memory at this length (the model's longer lengths are then not tried).",
        "",
        table(_with_ratio(report.inference, infer_keys)),
    ])


# ------------------------------------------------------------------ main
def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_recipe.md / .json, the recipe's log and RESULTS.md")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, lengths a tenth, recipe stage 0 only")
    parser.add_argument("--kernel-src", type=Path, help="mamba_ssm / causal_conv1d sdists to build if mamba_ssm does not import")
    parser.add_argument("--causal-conv1d", action="store_true", help="also build causal_conv1d_cuda (the fused kernel)")
    parser.add_argument("--triton-only", action="store_true",
                        help="build nothing: use mamba_ssm's Triton modules from --kernel-src without its __init__")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--budget-s", type=float, default=440.0,
                        help="seconds from the start after which no benchmark case starts (kernel build and recipe included)")
    parser.add_argument("--build-timeout-s", type=float, default=240.0)
    parser.add_argument("--recipe-timeout-s", type=float, default=240.0)
    parser.add_argument("--skip-recipe", action="store_true",
                        help="benchmarks only (a second call on a warm machine, same --work: the kernels are reused)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    start = time.monotonic()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_recipe: no CUDA device here; --device cpu --tiny is the dry run", file=sys.stderr)
        return 2
    plan = TINY_PLAN if args.tiny else GPU_PLAN
    out = Path(args.out).resolve()
    work = (args.work or Path(tempfile.mkdtemp(prefix="gpu_recipe_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    command = "python -m speechbrain_cald.bench.gpu_recipe " + " ".join(argv if argv is not None else sys.argv[1:])
    report = Report(command=command.strip(), info=machine_info(args.device, plan))
    report.write(out)
    kernel_step(report, args.device, args.kernel_src, args.causal_conv1d, work, args.build_timeout_s, args.triton_only)
    if (work / "kernel_build.log").exists():
        shutil.copy(work / "kernel_build.log", out / f"{STEM}_kernel_build.log")
    report.write(out)
    if report.failed:  # without the kernels the rest would not measure what it says
        print(to_markdown(report))
        return 1
    if args.skip_recipe:
        report.step("recipe", "skipped", 0.0, "--skip-recipe")
    else:
        # the dry run takes the lent machines' path: they have no espeak-ng
        recipe_step(report, plan, args.device, work, out, args.recipe_timeout_s, "tones" if args.tiny else _synth())
    report.write(out)
    bench_step(report, plan, args.device, start + args.budget_s, out)
    report.info["total s"] = round(time.monotonic() - start, 1)
    report.write(out)
    print(to_markdown(report))
    print(f"wrote {out / (STEM + '.md')} and {out / (STEM + '.json')}", file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
