"""tools/build_mamba_kernels.py: which sources it compiles, and clear errors before any build."""

import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "build_mamba_kernels.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("build_mamba_kernels", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sources_follow_the_packages_setup(tmp_path):
    tool = load_tool()
    exts = tool.extensions(tmp_path / "mamba", tmp_path / "conv")
    scan = [p.name for p in exts["selective_scan_cuda"]]
    # every dtype's forward and every dtype x real/complex backward, as mamba_ssm's setup.py
    assert scan[0] == "selective_scan.cpp" and len(scan) == 10
    assert "selective_scan_bwd_bf16_complex.cu" in scan and "selective_scan_fwd_fp16.cu" in scan
    assert [p.name for p in exts["causal_conv1d_cuda"]][0] == "causal_conv1d.cpp"


def test_missing_sources_and_unknown_names_are_clear_errors(tmp_path, capsys):
    tool = load_tool()
    args = ["--mamba-src", str(tmp_path), "--causal-conv1d-src", str(tmp_path), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as err:
        tool.main(args)
    assert err.value.code == 2
    assert "source files not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(args + ["--only", "flash_attn"])
    assert "unknown extension 'flash_attn'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing built, nothing written
