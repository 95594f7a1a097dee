"""Smoke test of the mixer benchmark script (tiny sizes; it measures nothing we assert on)."""

from dataclasses import asdict

from speechbrain_cald.bench import mixers


def test_quick_run_writes_table_with_every_row(tmp_path, capsys):
    assert mixers.main(["--quick", "--repeats", "1", "--lengths", "16", "40", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "mixers.md").read_text()
    assert (tmp_path / "mixers.png").stat().st_size > 1000
    assert "python -m speechbrain_cald.bench.mixers --quick" in md
    for name in mixers.MODELS:
        rows = [line for line in md.splitlines() if line.startswith(f"| {name} |")]
        # every model has one row per length, or one line saying why it was skipped
        assert len(rows) == 2 or (len(rows) == 1 and "skipped" in rows[0]), name
    printed = capsys.readouterr().out
    assert "| BiMamba2 (ours) | 40 |" in printed


def test_isolated_worker_reports_memory():
    r = mixers._run_isolated("BiMamba2 (ours)", 32, mixers.QUICK_SIZES, repeats=1, max_len=32)
    assert set(r) == {"fwd_ms", "train_ms", "fwd_peak_mb", "train_peak_mb"}
    assert r["fwd_ms"] > 0 and r["train_peak_mb"] >= r["fwd_peak_mb"] >= 0


def test_flop_estimates_grow_as_expected():
    s = mixers.Sizes()
    attention = mixers.MODELS["SDPA attention"].flops
    ours = mixers.MODELS["BiMamba2 (ours)"].flops
    # attention's T² term dominates at long T; the SSD stays linear
    assert attention(s, 12000) / attention(s, 3000) > 8
    assert abs(ours(s, 12000) / ours(s, 3000) - 4) < 1e-6
    assert asdict(mixers.QUICK_SIZES)["d_model"] < s.d_model
