"""The GPU comparison script's own logic, run on CPU with the torch backend on both sides."""

import json

import pytest

from speechbrain_cald.bench import mixers_cuda


def test_dry_run_writes_checks_and_timings(tmp_path, monkeypatch):
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
