"""The RESULTS.md pieces every stage-4 evaluation shares (evaluation.report)."""

import os

import pytest

from speechbrain_cald.evaluation import report


def test_header_warns_on_a_loaded_machine_only(monkeypatch):
    monkeypatch.setattr(report, "machine", lambda: "a CPU")
    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 0.5, 0.0, 0.0))
    loaded = report.results_header("LibriSpeech ASR", "How it was measured.")
    assert loaded[0] == "# LibriSpeech ASR: results\n" and loaded[1].endswith(" on a CPU.")
    assert loaded[2].startswith(f"**Loaded machine** (load average {cores + 0.5:.1f} on {cores} cores)")
    assert loaded[-1] == "How it was measured."
    monkeypatch.setattr(os, "getloadavg", lambda: (cores - 0.5, 0.0, 0.0))
    assert report.results_header("LibriSpeech ASR", "How it was measured.") == loaded[:2] + loaded[3:]


def test_results_are_written_whole(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("old")
    report.write_results(str(path), "# new\n")
    assert path.read_text() == "# new\n" and os.listdir(tmp_path) == ["RESULTS.md"]


def test_parse_pairs_keeps_order_and_names_the_option():
    assert list(report.parse_pairs(["b=1", "a=x=y"], "--sets").items()) == [("b", "1"), ("a", "x=y")]
    with pytest.raises(SystemExit, match="^--models: expected name=value, got 'teacher'$"):
        report.parse_pairs(["teacher"], "--models")
