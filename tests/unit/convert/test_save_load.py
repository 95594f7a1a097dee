"""save_student -> load_student in a FRESH process gives identical outputs; load errors; the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from speechbrain_cald.convert import load_student, load_teacher, save_student, to_linear_time
from speechbrain_cald.pretrained import OfflineSourceError

# Runs in a new interpreter: nothing of the converting process (modules, seeds,
# registries) is shared, so the saved directory alone must rebuild the student.
RELOAD_SCRIPT = r"""
import json, sys, torch
from speechbrain_cald.convert import load_student
jobs = json.load(open(sys.argv[1]))
for job in jobs:
    model = load_student(job["student"])
    inputs = torch.load(job["inputs"])
    with torch.no_grad():
        if job["kind"] == "sb":
            out = model.encode(inputs["src"], inputs["wav_len"])
        else:
            out = model(**inputs)[0]
    torch.save({"out": out, "conversion": model.cald_conversion}, job["output"])
print("reloaded", len(jobs))
"""


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def test_save_then_fresh_process_reload_gives_identical_outputs(teacher_dirs, cases, tmp_path):
    jobs, expected = [], {}
    for name, case in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            student = to_linear_time(case.load(teacher_dirs(case)), case.mixer, init="attention", **case.options)
        student.eval()
        batch, _, _ = case.make_batch(seed=1)
        # the reload runs with one thread; so does the reference, since some CPU kernels
        # split their reductions by thread count and bit-equality is what is checked
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                expected[name] = case.run(student, batch)
        finally:
            torch.set_num_threads(threads)
        base = tmp_path / name
        save_student(student, base / "student")
        torch.save(batch, base / "inputs.pt")
        jobs.append({"student": str(base / "student"), "inputs": str(base / "inputs.pt"),
                     "output": str(base / "out.pt"), "kind": case.kind, "name": name, "mixer": case.mixer})
        # atomic writes leave no temporary files behind
        assert not [p for p in (base / "student").iterdir() if p.name.startswith(".")], name
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    result = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(tmp_path / "jobs.json")],
                            capture_output=True, text=True, env=_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for job in jobs:
        got = torch.load(job["output"])
        assert torch.equal(got["out"], expected[job["name"]]), job["name"]
        assert got["conversion"]["mixer"] == job["mixer"]


def test_speechbrain_student_is_saved_with_its_hparams_never_pickled(tmp_path):
    from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR

    model = TransformerASR(tgt_vocab=5, input_size=8, d_model=16, nhead=2, num_encoder_layers=1,
                           num_decoder_layers=0, d_ffn=16, causal=False)
    student = to_linear_time(model, "bimamba2", d_state=4, expand=1, headdim=8)
    hparams = dict(tgt_vocab=5, input_size=8, d_model=16, nhead=2, num_encoder_layers=1,
                   num_decoder_layers=0, d_ffn=16, causal=False)
    save_student(student, tmp_path / "with", hparams=hparams)
    with pytest.raises(ValueError, match="hparams"):  # a pickled module would be code in the folder
        save_student(student, tmp_path / "without")
    assert sorted(p.name for p in (tmp_path / "with").iterdir()) == ["cald_conversion.json", "hparams.json", "model.ckpt"]
    x = torch.randn(2, 6, 8)
    wav_len = torch.tensor([1.0, 0.5])
    with torch.no_grad():
        expected = student.eval().encode(x, wav_len)
        assert torch.equal(load_student(tmp_path / "with").encode(x, wav_len), expected)


def test_save_student_refuses_an_unconverted_model(tmp_path):
    with pytest.raises(ValueError, match="cald_conversion"):
        save_student(nn.Linear(2, 2), tmp_path)


def test_hub_ids_are_refused():
    with pytest.raises(OfflineSourceError, match="model-hub id"):
        load_teacher("facebook/wav2vec2-base")
    with pytest.raises(OfflineSourceError, match="model-hub id"):
        load_student("someone/bert-cald-student")


def test_load_student_of_a_teacher_directory_says_what_is_missing(teacher_dirs, cases):
    with pytest.raises(FileNotFoundError, match="cald_conversion.json"):
        load_student(teacher_dirs(cases["bert-bimamba2"]))


def test_load_teacher_of_an_empty_directory_lists_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_teacher(tmp_path)


def test_cli_converts_prints_tables_and_saves(teacher_dirs, cases, tmp_path):
    case = cases["wav2vec2_ctc-bimamba2"]
    out_dir = tmp_path / "student"
    cmd = [sys.executable, "-m", "speechbrain_cald.convert", teacher_dirs(case), str(out_dir),
           "--mixer", "bimamba2", "--init", "attention"]
    for k, v in case.options.items():
        cmd += ["--mixer-option", f"{k}={v}"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    teacher = load_teacher(teacher_dirs(case))
    student = load_student(out_dir)
    from speechbrain_cald.convert import count_parameters

    assert f"{count_parameters(teacher):,}" in text and f"{count_parameters(student):,}" in text
    for i in range(2):
        assert f"wav2vec2.encoder.layers.{i}.attention" in text
    assert "Wav2Vec2Attention" in text and "BiMamba2" in text
    assert student.cald_conversion["init"] == "attention"
    recorded = student.cald_conversion["mixer_options"]
    assert {k: recorded[k] for k in case.options} == case.options
    assert recorded["d_conv"] == 4 and recorded["rmsnorm"] is True  # constructor defaults recorded too


def test_cli_rejects_a_hub_id(tmp_path):
    result = subprocess.run([sys.executable, "-m", "speechbrain_cald.convert", "facebook/wav2vec2-base",
                             str(tmp_path / "s")], capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode != 0 and "model-hub id" in result.stderr


def test_load_student_of_an_unregistered_family_says_so(tmp_path):
    (tmp_path / "cald_conversion.json").write_text(json.dumps({"family": "toy_family", "mixer": "bimamba2"}))
    with pytest.raises(KeyError, match="register_family"):
        load_student(tmp_path)


def test_bimamba_with_mamba_v1_inner_mixer_round_trips(teacher_dirs, cases, tmp_path):
    """BiMamba2's own `mixer` option goes through mixer_options={...} and is recorded."""
    case = cases["bert-bimamba2"]
    teacher = case.load(teacher_dirs(case))
    student = to_linear_time(teacher, "bimamba2", mixer_options={"mixer": "mamba", "d_state": 4, "expand": 1}).eval()
    mixer = student.encoder.layer[0].attention.self.mixer
    assert type(mixer.forward_mixer).__name__ == "Mamba"
    assert student.cald_conversion["mixer_options"]["mixer"] == "mamba"
    save_student(student, tmp_path / "s")
    reloaded = load_student(tmp_path / "s")
    ids = torch.randint(3, 60, (2, 6))
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).last_hidden_state, student(input_ids=ids).last_hidden_state)


def test_cli_lists_families():
    from speechbrain_cald.convert import FAMILIES
    from speechbrain_cald.convert.__main__ import main

    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--list-families"]) == 0
    for name in FAMILIES:
        assert name in out.getvalue()
