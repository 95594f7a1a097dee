"""bench.gpu_recipe: the CPU dry run of the one-call GPU check, and its GPU-only logic on stand-ins."""

import json
import math
import os
import sys

import pytest
import torch

from speechbrain_cald.bench import gpu_recipe, speech_encoders
from speechbrain_cald.bench.speech_encoders import MODELS, OOM, TINY

TRAIN_MODELS = {*MODELS, "teacher forward (no grad)"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    rc = gpu_recipe.main(["--device", "cpu", "--tiny", "--out", str(out), "--work", str(tmp_path_factory.mktemp("work"))])
    return rc, json.loads((out / "gpu_recipe.json").read_text()), (out / "gpu_recipe.md").read_text(), out


def _steps(report):
    return {s["step"]: s for s in report["steps"]}


@pytest.mark.slow
def test_dry_run_measures_every_row_with_finite_numbers(dry_run):
    rc, report, _, _ = dry_run
    assert rc == 0
    plan = gpu_recipe.TINY_PLAN
    train = report["train_steps"]
    assert {(r["model"], r["precision"], r["seconds"]) for r in train} == {
        (m, p, s) for m in TRAIN_MODELS for p in plan.precisions for s in plan.train_seconds}
    infer = report["inference"]
    assert {(r["model"], r["precision"], r["seconds"]) for r in infer} == {
        (m, p, s) for m in MODELS for p in plan.precisions for s in plan.infer_seconds}
    for row in train + infer:
        assert row["status"] == "ok", row
        assert math.isfinite(row["ms"]) and row["ms"] > 0 and math.isfinite(row["peak MB"]), row
    # batches of the plan's audio per step, at least one utterance
    assert {r["seconds"]: r["batch"] for r in train if r["model"] == "teacher"} == {0.5: 14, 1.5: 4, 3.5: 2}
    assert {r["backend"] for r in train if r["model"] == "BiMamba2 student"} == {"torch"}


@pytest.mark.slow
def test_dry_run_states_what_it_skipped_and_why(dry_run):
    rc, report, md, out = dry_run
    steps = _steps(report)
    assert steps["kernels"]["status"] == "skipped" and "no GPU" in steps["kernels"]["note"]
    assert steps["recipe stages 0-0"]["status"] == "ok"
    assert steps["recipe stages 1-4"]["status"] == "skipped" and "test_librispeech_asr" in steps["recipe stages 1-4"]["note"]
    for name in ("kernels used by the recipe (assert)", "kernels used by the benchmark's BiMamba2 (assert)"):
        assert steps[name]["status"] == "skipped" and "no GPU" in steps[name]["note"], name
    assert "bf16 kernels" in steps["kernels used by the benchmark's BiMamba2 (assert)"]["note"]
    assert [r["stage"] for r in report["recipe_stages"] if isinstance(r["time s"], float)] == [0]
    assert (out / "gpu_recipe_recipe.log").exists()
    # the header the docs/bench reports carry, and one table per step
    for key in ("date", "device", "torch", "CUDA", "mamba_ssm (before)", "recipe command (stages 0-0)"):
        assert key in report["info"], key
    assert report["command"].startswith("python -m speechbrain_cald.bench.gpu_recipe --device cpu --tiny")
    for heading in ("## Steps", "## Recipe stages", "## Training step", "## Encoder inference"):
        assert heading in md
    assert md.count("| skipped |") == 4 and "| time / teacher |" in md


def test_recipe_kernel_assert_reads_the_students_log():
    report = gpu_recipe.Report("cmd", {})
    kernels = "speechbrain_cald.nnet.mamba2 - Mamba2 backend auto: cuda inputs -> mamba_ssm kernels (fused conv + scan)\n"
    gpu_recipe.check_kernels_in_log(report, "cuda", "== stage 3\n" + kernels, students_ran=True)
    plain = "x - Mamba2 backend auto: cuda inputs -> plain PyTorch (mamba_ssm does not import)\n"
    gpu_recipe.check_kernels_in_log(report, "cuda", kernels + plain, students_ran=True)
    gpu_recipe.check_kernels_in_log(report, "cuda", "no mixer ran\n", students_ran=True)
    assert [s["status"] for s in report.steps] == ["ok", "FAILED", "FAILED"]
    assert "no such line" in report.steps[2]["note"] and report.failed


def test_without_kernels_or_sources_the_gpu_run_stops_first(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_recipe, "probe_kernels", lambda paths=(): {"mamba_ssm": "does not import (x)", "triton": "3"})
    report = gpu_recipe.Report("cmd", {})
    step = gpu_recipe.KernelStep(report, "cuda", None, False, tmp_path, 10)
    assert step.start() is False and step.finish() == []
    assert report.failed and "no --kernel-src" in report.steps[0]["note"]
    with pytest.raises(FileNotFoundError, match="no mamba_ssm-<version>.tar.gz"):
        gpu_recipe.KernelStep(gpu_recipe.Report("cmd", {}), "cuda", tmp_path, False, tmp_path, 10).start()


def test_out_of_memory_is_a_result_and_ends_the_longer_lengths(monkeypatch):
    def measured(model, precision, seconds):
        if seconds >= 2.0:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return {"ms": 1.0, "peak MB": 2.0, "status": "ok"}

    rows = speech_encoders._measure_rows(
        ["Linformer student"], TINY, "cpu", [("fp32", 1.0), ("fp32", 2.0), ("fp32", 4.0), ("bf16", 1.0)],
        lambda m, p, s: speech_encoders._oom_guard(lambda: measured(m, p, s), "cpu"), deadline=None)
    assert [r.get("ms") for r in rows] == [1.0, OOM, None, 1.0]
    assert rows[2]["status"] == "not tried: OOM at 2 s" and speech_encoders.finite_numbers(rows)


def test_a_spent_budget_leaves_cases_not_tried():
    rows = speech_encoders.measure_inference(TINY, "cpu", seconds=[0.5, 1.0], precisions=["fp32"],
                                             models=["teacher"], deadline=0.0)
    assert [r["status"] for r in rows] == ["not tried: time budget spent"] * 2


def test_without_cuda_the_gpu_run_says_so(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert gpu_recipe.main(["--out", str(tmp_path)]) == 2
    assert "--device cpu --tiny" in capsys.readouterr().err


def _fake_sdists(root):
    """mamba_ssm / causal_conv1d source folders whose package __init__ fails, as mamba_ssm's does unbuilt."""
    mamba = root / "mamba_ssm-0.0"
    (mamba / "mamba_ssm" / "ops" / "triton").mkdir(parents=True)
    (mamba / "setup.py").write_text("")
    (mamba / "mamba_ssm" / "__init__.py").write_text('__version__ = "0.0"\nimport selective_scan_cuda\n')
    (mamba / "mamba_ssm" / "ops" / "__init__.py").write_text("")
    (mamba / "mamba_ssm" / "ops" / "triton" / "__init__.py").write_text("")
    (mamba / "mamba_ssm" / "ops" / "triton" / "ssd_combined.py").write_text("causal_conv1d_fwd_function = None\n")
    (root / "causal_conv1d-0.0").mkdir()
    (root / "causal_conv1d-0.0" / "setup.py").write_text("")
    return root


@pytest.mark.parametrize("triton_only", [True, False])
def test_kernels_reach_the_recipe_processes_even_when_the_build_fails(tmp_path, monkeypatch, triton_only):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    src = _fake_sdists(tmp_path / "src")
    report = gpu_recipe.Report("cmd", {})
    # triton_only=False runs tools/build_mamba_kernels.py for real: it refuses the fake sources (no csrc/)
    step = gpu_recipe.KernelStep(report, "cuda", src, False, tmp_path / "work", 60, triton_only=triton_only)
    assert step.start()
    paths = step.finish()
    note = report.steps[0]["note"]
    assert report.steps[0]["status"] == "ok" and "shim" in note, report.steps
    assert ("--triton-only: nothing built" in note) == triton_only
    assert triton_only or "source files not found" in (tmp_path / "work" / "kernel_build.log").read_text()
    assert report.info["mamba_ssm"] == "0.0 (Triton modules only)"
    assert report.info["causal_conv1d (fused Mamba2 path)"] is False
    # a new process (run.sh's train.py) finds the same package through PYTHONPATH
    assert paths and os.environ["PYTHONPATH"].split(os.pathsep)[0] == paths[0]
    assert gpu_recipe.kernels_import(gpu_recipe.probe_kernels())
