"""The GPU comparison script's own logic, run on CPU with the torch backend on both sides."""

import json

import pytest

from speechbrain_cald.bench import mixers_cuda


def test_dry_run_writes_checks_and_timings(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_F32_DEFAULT", raising=False)  # it would rename the report
    # main() switches both module globals for the dry run: restore them afterwards
    monkeypatch.setattr(mixers_cuda, "DEVICE", mixers_cuda.DEVICE)
    monkeypatch.setattr(mixers_cuda, "KERNELS", mixers_cuda.KERNELS)
    rc = mixers_cuda.main([
        "--dry-run-cpu", "--lengths", "40", "--batches", "1", "--repeats", "1",
        "--check-length", "300", "--out", str(tmp_path),
    ])
    report = json.loads((tmp_path / "mixers_cuda.json").read_text())
    # the same path on both sides: every check must agree, and all of them ran
    assert rc == 0
    names = [row["check"] for row in report["checks"]]
    assert any(n.startswith("Mamba2 3 pieces") for n in names)
    assert any(n.startswith("Mamba v1") for n in names)
    assert all(row["allclose 1e-3"] for row in report["checks"])
    models = {row["model"] for row in report["timings"]}
    assert "SDPA attention" in models and "BiMamba2 ours (torch, chunk 64)" in models
    assert all(row["fwd ms"] > 0 for row in report["timings"])
    assert "| check |" in (tmp_path / "mixers_cuda.md").read_text()


def test_compare_flags_a_real_difference():
    torch = pytest.importorskip("torch")
    row = mixers_cuda._compare("x", torch.ones(3) * 1.01, torch.ones(3))
    assert not row["allclose 1e-3"] and row["max abs diff"] == pytest.approx(0.01, rel=1e-3)


def test_without_cuda_it_says_so(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert mixers_cuda.main(["--checks-only"]) == 2
    assert "needs one" in capsys.readouterr().err


def _dry_run(tmp_path, monkeypatch, *extra):
    monkeypatch.setattr(mixers_cuda, "DEVICE", mixers_cuda.DEVICE)
    monkeypatch.setattr(mixers_cuda, "KERNELS", mixers_cuda.KERNELS)
    return mixers_cuda.main([
        "--dry-run-cpu", "--lengths", "40", "--batches", "1", "--repeats", "1",
        "--check-length", "300", "--out", str(tmp_path), *extra,
    ])


def test_bf16_dry_run_compares_both_candidates_with_fp32(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_F32_DEFAULT", raising=False)
    rc = _dry_run(tmp_path, monkeypatch, "--dtype", "bfloat16")
    # its own file: the fp32 record is not overwritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixers_cuda_bf16.json", "mixers_cuda_bf16.md"]
    report = json.loads((tmp_path / "mixers_cuda_bf16.json").read_text())
    assert report["info"]["dtype"].startswith("bfloat16")
    checks = report["checks"]
    assert {row["candidate"] for row in checks} == {"torch bfloat16", "mamba_ssm bfloat16"}
    assert rc == (0 if all(mixers_cuda.passed(row) for row in checks) else 1)
    for row in checks:
        # the bar follows from bf16 and the reference's magnitude, not a fixed atol
        grad = " grad " in row["check"]
        assert row["tol"] == pytest.approx(mixers_cuda.tolerance(row["max abs ref"], mixers_cuda.DTYPES["bfloat16"], grad))
        assert row["within tol"] == (row["max abs diff"] <= row["tol"])
    outputs = [row for row in checks if row["check"].startswith(("Mamba2 fwd", "BiMamba2", "Mamba v1 fwd"))]
    assert len(outputs) == 2 * 4 and all(row["within tol"] for row in outputs)
    assert all(row["max abs diff"] == 0 for row in checks if row["check"].endswith("padded frames == 0"))
    # bf16 is really used: not bit-identical to fp32
    assert all(row["max abs diff"] > 0 for row in outputs)
    md = (tmp_path / "mixers_cuda_bf16.md").read_text()
    assert "- dtype: bfloat16" in md and "## Checks (bfloat16 vs our path in float32" in md and "2^-8" in md
    assert "## Timings (bfloat16," in md and report["timings"]


@pytest.mark.parametrize("dtype, triton_f32, stem", [
    ("float32", None, "mixers_cuda"),
    ("float32", "", "mixers_cuda"),
    ("float32", "ieee", "mixers_cuda_ieee"),
    ("bfloat16", None, "mixers_cuda_bf16"),
    ("bfloat16", "tf32x3", "mixers_cuda_bf16_tf32x3"),
])
def test_report_stem(dtype, triton_f32, stem):
    assert mixers_cuda.report_stem(dtype, triton_f32) == stem


def test_ieee_run_writes_its_own_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_F32_DEFAULT", "ieee")
    assert _dry_run(tmp_path, monkeypatch, "--checks-only") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixers_cuda_ieee.json", "mixers_cuda_ieee.md"]
    assert "- TRITON_F32_DEFAULT: ieee" in (tmp_path / "mixers_cuda_ieee.md").read_text()


def test_without_selective_scan_cuda_the_v1_kernel_rows_are_skipped(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(mixers_cuda, "DEVICE", "cpu")
    monkeypatch.setattr(mixers_cuda, "KERNELS", "torch")
    info = {"causal_conv1d (fused Mamba2 path)": False,
            "selective_scan_cuda (Mamba v1)": "no (ModuleNotFoundError: No module named 'selective_scan_cuda')"}
    s = mixers_cuda.Sizes(d_model=32, heads=2, d_state=8, headdim=16)
    kernels = mixers_cuda.run_checks(s, 100, info)
    assert kernels and not any(row["check"].startswith("Mamba v1") for row in kernels)
    # our own path in bf16 still has its Mamba v1 rows
    ours = mixers_cuda.run_checks(s, 100, info, torch.bfloat16, candidate="torch")
    assert any(row["check"].startswith("Mamba v1") for row in ours)
    timings = mixers_cuda.run_timings(s, [40], [1], 1, info)
    assert timings and not any(row["model"].startswith("Mamba v1") for row in timings)
