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
   and the recipe's), and the import is checked again; where the package still
   does not import (or with ``--triton-only``), its Triton modules alone, the
   Mamba2 path, are used through a shim package (:func:`triton_only_shim`).
   The report says which happened (already importable, built and how long, or
   the shim).
2. **recipe**: a tiny LibriSpeech in the distributed layout (espeak-ng speech,
   or :func:`testing.speech.tone_speech` where espeak-ng is missing) and a
   tiny random wav2vec2, written on the spot, then ``./run.sh --recipe
   LibriSpeech/ASR`` stages 0-4 with the smoke settings of
   ``testing.recipes`` and ``--precision=bf16`` for teacher and students, in
   subprocesses: stages 0-2 (no Mamba2 in them) while the kernels build, 3-4
   after. The students' mixers are built with ``backend: auto``; their log
   line (``nnet.mamba2``: "Mamba2 backend auto: cuda inputs -> ...") must say
   the mamba_ssm kernels ran: asserted.
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
        [--work DIR] [--budget-s 360] [--skip-recipe] [--triton-only]
    python -m speechbrain_cald.bench.gpu_recipe --device cpu --tiny --out OUT
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import re
import shutil
import signal
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
    repeats: int  # timed training steps after a warm-up one
    infer_repeats: int  # timed inference calls after a warm-up one


GPU_PLAN = Plan(BASE, (5.0, 15.0, 35.0), 200.0, (30.0, 120.0, 600.0, 1800.0), ("fp32", "bf16"), 4, 3, 2)
# the dry run: lengths and batches scaled down, stage 0 only (stages 0-4: tests/recipes/test_librispeech_asr.py,
# minutes on 2 cores)
TINY_PLAN = Plan(TINY, (0.5, 1.5, 3.5), 7.0, (1.0, 4.0, 10.0, 30.0), ("fp32", "bf16"), 0, 1, 1)


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


class KernelStep:
    """Make the mamba_ssm kernels importable, in two halves so a build runs beside the recipe's stages 0-2.

    :meth:`start`: mamba_ssm as installed, else its sources unpacked from
    ``kernel_src`` and ``tools/build_mamba_kernels.py`` started for the GPU
    present (``selective_scan_cuda``, which the package's ``__init__`` imports;
    ``causal_conv1d_cuda`` too with ``with_conv``). :meth:`finish`: waits for the
    build, checks the import in a fresh interpreter, falls back to the Triton
    modules alone (:func:`triton_only_shim`; at once with ``triton_only``), puts
    what it found on ``PYTHONPATH`` and records the step, saying which happened.
    """

    def __init__(self, report: Report, device: str, kernel_src: Optional[Path], with_conv: bool, work: Path,
                 timeout_s: float, triton_only: bool = False):
        self.report, self.device, self.kernel_src, self.with_conv = report, device, kernel_src, with_conv
        self.work, self.timeout_s, self.triton_only = work, timeout_s, triton_only
        self.t0 = time.monotonic()
        self.found: Dict[str, object] = {}
        self.sources: Optional[Tuple[Path, Path]] = None
        self.names = ["selective_scan_cuda"] + (["causal_conv1d_cuda"] if with_conv else [])
        self.build: Optional[subprocess.Popen] = None
        self.build_log = None
        self.paths: List[str] = []

    def start(self) -> bool:
        """Probe, and start the build if one is needed; False when the step has failed already."""
        self.found = probe_kernels()
        self.report.info["mamba_ssm (before)"] = self.found["mamba_ssm"]
        self.report.info["triton"] = self.found["triton"]
        if self.device != "cuda":
            self.report.step("kernels", "skipped", time.monotonic() - self.t0,
                             "no GPU (--device cpu): mamba_ssm's kernels are CUDA-only, not built; the mixers take "
                             f"their plain-PyTorch path (mamba_ssm here: {self.found['mamba_ssm']})")
            return True
        if kernels_import(self.found):
            return True
        if self.kernel_src is None:
            self.report.step("kernels", "FAILED", time.monotonic() - self.t0,
                             f"mamba_ssm does not import ({self.found['mamba_ssm']}) and no --kernel-src DIR to build "
                             "it from")
            return False
        self.sources = (unpacked_source(self.kernel_src, "mamba_ssm", self.work / "src"),
                        unpacked_source(self.kernel_src, "causal_conv1d", self.work / "src"))
        if not self.triton_only:
            cmd = [sys.executable, str(recipe_testing.ROOT / "tools" / "build_mamba_kernels.py"),
                   "--mamba-src", str(self.sources[0]), "--causal-conv1d-src", str(self.sources[1]),
                   "--out", str(self.work / "kernels"), "--only", *self.names]
            logger.info("+ %s", " ".join(cmd))
            # its own process group: a build past its time is stopped with the compilers it started
            self.work.mkdir(parents=True, exist_ok=True)
            self.build_log = open(self.work / "kernel_build.log", "w")
            self.build = subprocess.Popen(cmd, stdout=self.build_log, stderr=subprocess.STDOUT, start_new_session=True)
        return True

    def _wait_for_build(self) -> str:
        """The build's outcome in one line (its log: ``work/kernel_build.log``)."""
        left = self.timeout_s - (time.monotonic() - self.t0)
        try:
            self.build.wait(timeout=max(1.0, left))
        except subprocess.TimeoutExpired:
            os.killpg(self.build.pid, signal.SIGTERM)
            self.build.wait()
            return f"timed out after {self.timeout_s:.0f} s"
        finally:
            self.build_log.close()
        log = (self.work / "kernel_build.log").read_text()
        return "; ".join(ln for ln in log.splitlines() if ln.startswith(("built", "FAILED"))) or "no output"

    def finish(self) -> List[str]:
        """Wait for the build, check the import, record the step; the ``PYTHONPATH`` entries added."""
        if self.device != "cuda" or self.report.failed:
            return []
        if kernels_import(self.found):
            return self._done(self.found, [], "mamba_ssm imports as installed: nothing built")
        mamba_src, conv_src = self.sources
        why_not_built = "--triton-only: nothing built"
        if self.build is not None:
            built = self._wait_for_build()
            paths = [str(mamba_src), str(self.work / "kernels" / "selective_scan_cuda")]
            if self.with_conv and (self.work / "kernels" / "causal_conv1d_cuda" / "causal_conv1d_cuda.so").exists():
                paths += [str(conv_src), str(self.work / "kernels" / "causal_conv1d_cuda")]
            after = probe_kernels(paths)
            if kernels_import(after):
                return self._done(after, paths, f"built for this GPU by tools/build_mamba_kernels.py --only "
                                                f"{' '.join(self.names)} ({built}); mamba_ssm imports from its sources "
                                                "+ the built modules")
            why_not_built = f"built ({built}), but the package does not import: {after['mamba_ssm']}"
        shim = [str(triton_only_shim(mamba_src, self.work))]
        after = probe_kernels(shim)
        if kernels_import(after):
            return self._done(after, shim, f"{why_not_built}; mamba_ssm's Triton modules through a shim package "
                                           "(its __init__ skipped; no Mamba v1 or causal_conv1d kernels)")
        self.report.step("kernels", "FAILED", time.monotonic() - self.t0,
                         f"{why_not_built}; not even its Triton modules import: {after['mamba_ssm']}")
        return []

    def _done(self, info: Dict[str, object], paths: List[str], how: str) -> List[str]:
        self.report.info["mamba_ssm"] = info["mamba_ssm"]
        self.report.info["causal_conv1d (fused Mamba2 path)"] = info["causal_conv1d (fused Mamba2 path)"]
        _use_paths(paths)
        self.report.step("kernels", "ok", time.monotonic() - self.t0, how)
        self.paths = paths
        return paths


# ------------------------------------------------------------------ recipe
def _synth() -> str:
    from speechbrain_cald.data.espeak import EspeakMissingError, espeak_binary

    try:
        espeak_binary()
        return "espeak"
    except EspeakMissingError:
        return "tones"


def recipe_command(data: Path, model: Path, exp: Path, first: int, last: int, precision: str) -> List[str]:
    """``bash run.sh --skip-setup --recipe LibriSpeech/ASR`` stages ``first``..``last`` with the smoke settings.

    Example
    -------
    >>> cmd = recipe_command(Path("D"), Path("M"), Path("E"), 0, 4, "bf16")
    >>> cmd[2:6], cmd[cmd.index("--teacher_args") + 1].endswith("--precision=bf16")
    (['--skip-setup', '--recipe', 'LibriSpeech/ASR', '--stage'], True)
    """
    bf16 = " --precision=bf16" if precision == "bf16" else ""
    return ["bash", str(recipe_testing.ROOT / "run.sh"), "--skip-setup", "--recipe", RECIPE, "--stage", str(first),
            "--stop_stage", str(last), "--data_folder", str(data), "--pretrained_dir", str(model),
            "--exp", str(exp), "--results_md", str(exp / "RESULTS.md"),
            "--teacher_args", recipe_testing.TEACHER_ARGS + bf16, "--student_args", recipe_testing.STUDENT_ARGS + bf16,
            "--eval_args", recipe_testing.EVAL_ARGS]


def stages_in_log(log: str) -> List[Dict[str, object]]:
    """The stage lines of run.sh logs: ``stage``, ``title``, ``time s`` (or why it was skipped).

    Stages outside a call's ``--stage``/``--stop_stage`` are left out: another call ran them.

    Example
    -------
    >>> stages_in_log("== stage 0: Manifests: done in 4.1 s; outputs: a\\n"
    ...               "== stage 1: Tokens: skipped (outside --stage 0 --stop_stage 0)\\n"
    ...               "== stage 2: Teacher: skipped, outputs exist (--force true to redo): b\\n")
    [{'stage': 0, 'title': 'Manifests', 'time s': 4.1}, {'stage': 2, 'title': 'Teacher', 'time s': 'skipped, outputs exist (--force true to redo): b'}]
    """
    rows = []
    for m in STAGE_DONE.finditer(log):
        if m.group(3).startswith("skipped (outside"):
            continue
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


class RecipeStep:
    """The recipe on a tiny corpus: :meth:`write_corpus`, :meth:`run` (stages ``first``..``last``, called
    twice: 0-2 beside the kernel build, 3-4 after it), :meth:`check` (the stages and the kernels, from the log)."""

    def __init__(self, report: Report, plan: Plan, device: str, work: Path, out: Path, timeout_s: float):
        self.report, self.plan, self.device, self.out, self.timeout_s = report, plan, device, out, timeout_s
        self.data, self.model, self.exp = work / "LibriSpeech", work / "w2v2", work / "exp"
        self.precision = "bf16" if device == "cuda" else "fp32"
        self.log, self.rc, self.seconds = "", 0, 0.0

    def write_corpus(self, synth: str) -> None:
        """A tiny LibriSpeech (``synth``: ``espeak`` or ``tones``) and a tiny random wav2vec2."""
        from speechbrain_cald.testing.speech import save_tiny_speech_model, write_librispeech

        t0 = time.monotonic()
        splits = recipe_testing.SMOKE_CORPORA[RECIPE]["splits"]
        if not self.data.is_dir():
            write_librispeech(str(self.data), splits, synth=synth)
        if not self.model.is_dir():
            save_tiny_speech_model(str(self.model), "wav2vec2")
        self.report.step("corpus", "ok", time.monotonic() - t0,
                         f"tiny LibriSpeech ({', '.join(f'{k} {v}' for k, v in splits.items())} utterances, "
                         f"{'espeak-ng speech' if synth == 'espeak' else 'tones (no espeak-ng)'}) and a tiny random "
                         "wav2vec2")

    def run(self, first: int, last: int) -> None:
        """Stages ``first``..``last`` (none when ``first > last``) in a subprocess; the log accumulates."""
        if first > last:
            return
        cmd = recipe_command(self.data, self.model, self.exp, first, last, self.precision)
        self.report.info[f"recipe command (stages {first}-{last})"] = " ".join(cmd)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, env=recipe_testing.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=max(1.0, self.timeout_s - self.seconds))
            log, rc = proc.stdout.decode(errors="replace"), proc.returncode
        except subprocess.TimeoutExpired as err:
            log, rc = (err.stdout or b"").decode(errors="replace"), f"timed out (all stages: {self.timeout_s:.0f} s)"
        self.seconds += time.monotonic() - t0
        self.log += log
        self.rc = self.rc or rc
        (self.out / f"{STEM}_recipe.log").write_text(self.log)
        if (self.exp / "RESULTS.md").exists():
            shutil.copy(self.exp / "RESULTS.md", self.out / f"{STEM}_RESULTS.md")

    def check(self) -> None:
        """Record the stages run (all of 0..``plan.stop_stage`` done, exit 0) and the kernels' assert."""
        stop = self.plan.stop_stage
        self.report.recipe_stages = stages_in_log(self.log)
        # a stage whose outputs exist from an earlier call on the same --work counts as done
        done = {r["stage"] for r in self.report.recipe_stages
                if isinstance(r["time s"], float) or str(r["time s"]).startswith("skipped, outputs exist")}
        wanted = set(range(stop + 1))
        ok = self.rc == 0 and wanted <= done
        self.report.step(f"recipe stages 0-{stop}", "ok" if ok else "FAILED", self.seconds,
                         f"stages {sorted(done)} of {sorted(wanted)}, exit {self.rc}, precision {self.precision}; "
                         f"log: {STEM}_recipe.log")
        if stop < 4:
            self.report.step(f"recipe stages {stop + 1}-4", "skipped", 0.0,
                             "--tiny: run end to end by tests/recipes/test_librispeech_asr.py (minutes on 2 CPU "
                             "cores, too slow for a dry run)")
        check_kernels_in_log(self.report, self.device, self.log, students_ran=stop >= 3)


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
        plan.sizes, device, plan.infer_seconds, plan.precisions, plan.infer_repeats, deadline=deadline)
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
    parser.add_argument("--budget-s", type=float, default=360.0,
                        help="seconds from the start after which no benchmark case starts (kernel build and recipe included)")
    parser.add_argument("--build-timeout-s", type=float, default=240.0)
    parser.add_argument("--recipe-timeout-s", type=float, default=300.0)
    parser.add_argument("--stop-stage", type=int, choices=range(5),
                        help="last recipe stage (default: 4; --tiny: 0, as the full run takes minutes on 2 cores)")
    parser.add_argument("--skip-recipe", action="store_true",
                        help="benchmarks only (a second call on a warm machine, same --work: the kernels are reused)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    start = time.monotonic()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_recipe: no CUDA device here; --device cpu --tiny is the dry run", file=sys.stderr)
        return 2
    plan = TINY_PLAN if args.tiny else GPU_PLAN
    if args.stop_stage is not None:
        plan = dataclasses.replace(plan, stop_stage=args.stop_stage)
    out = Path(args.out).resolve()
    work = (args.work or Path(tempfile.mkdtemp(prefix="gpu_recipe_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    command = "python -m speechbrain_cald.bench.gpu_recipe " + " ".join(argv if argv is not None else sys.argv[1:])
    report = Report(command=command.strip(), info=machine_info(args.device, plan))
    report.write(out)
    kernels = KernelStep(report, args.device, args.kernel_src, args.causal_conv1d, work, args.build_timeout_s,
                         args.triton_only)
    recipe = RecipeStep(report, plan, args.device, work, out, args.recipe_timeout_s)
    if kernels.start() and not args.skip_recipe:
        # the dry run takes the lent machines' path: they have no espeak-ng
        recipe.write_corpus("tones" if args.tiny else _synth())
        recipe.run(0, min(2, plan.stop_stage))  # no Mamba2 before stage 3: beside the kernel build
    kernels.finish()
    if (work / "kernel_build.log").exists():
        shutil.copy(work / "kernel_build.log", out / f"{STEM}_kernel_build.log")
    report.write(out)
    if report.failed:  # without the kernels the rest would not measure what it says
        print(to_markdown(report))
        return 1
    if args.skip_recipe:
        report.step("recipe", "skipped", 0.0, "--skip-recipe")
    else:
        recipe.run(3, plan.stop_stage)
        recipe.check()
    report.write(out)
    bench_step(report, plan, args.device, start + args.budget_s, out)
    report.info["total s"] = round(time.monotonic() - start, 1)
    report.write(out)
    print(to_markdown(report))
    print(f"wrote {out / (STEM + '.md')} and {out / (STEM + '.json')}", file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
