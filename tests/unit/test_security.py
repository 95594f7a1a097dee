"""No code runs from data: crafted model folders and checkpoints run nothing on any load path.

Each test plants a file that would write a marker file if its content were
executed (a pickle whose ``__reduce__`` runs code, a class name pointing at
``subprocess.Popen``, a dotted name importing a module that writes the marker)
and checks that loading refuses it with an error naming the file (and key), and
that the marker never appears. docs/security.md says what is loaded and how.
"""

from __future__ import annotations

import json
import os
import random
import sys

import numpy as np
import pytest
import torch
from torch import nn

SB_CLASS = "speechbrain.lobes.models.transformer.TransformerASR.TransformerASR"
SB_HPARAMS = dict(tgt_vocab=5, input_size=8, d_model=16, nhead=2, num_encoder_layers=1,
                  num_decoder_layers=0, d_ffn=16, causal=False)
TINY_MIXER = dict(d_state=4, expand=1, headdim=8, chunk_size=4)


class _WritesMarker:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _crafted_pickle(path, marker):
    torch.save({"state": _WritesMarker(marker)}, path)
    return path


def _popen_touching(marker):
    return {"class": "subprocess.Popen", "kwargs": {"args": ["touch", str(marker)]}}


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """A module on sys.path whose import writes ``tmp_path / "imported"``; yields (name, marker)."""
    marker = tmp_path / "imported"
    name = "cald_evil_module_for_tests"
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "import torch\n"
        "class Model(torch.nn.Module):\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        super().__init__()\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    yield name, marker
    sys.modules.pop(name, None)


def _sb_student_folder(directory):
    """A SpeechBrain-format student saved normally (hparams.json + model.ckpt + cald_conversion.json)."""
    from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR

    from speechbrain_cald.convert import save_student, to_linear_time

    student = to_linear_time(TransformerASR(**SB_HPARAMS), "bimamba2", **TINY_MIXER)
    save_student(student, directory, hparams=SB_HPARAMS)
    return directory


def _sb_teacher_folder(directory):
    """A SpeechBrain teacher folder (hparams.json + model.ckpt)."""
    from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR

    from speechbrain_cald.convert import save_speechbrain_model

    return save_speechbrain_model(TransformerASR(**SB_HPARAMS), directory, SB_HPARAMS)


def _bert_folder(directory):
    import transformers

    config = transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, vocab_size=30, max_position_embeddings=16)
    transformers.BertModel(config).save_pretrained(directory)
    return directory


def _bert_student_folder(directory):
    from speechbrain_cald.convert import load_teacher, save_student, to_linear_time

    teacher = load_teacher(_bert_folder(directory.parent / "bert_teacher"))
    save_student(to_linear_time(teacher, "bimamba2", **TINY_MIXER), directory)
    return directory


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# ---------------------------------------------------------------- pickles
def test_a_pickled_model_pt_is_never_unpickled(tmp_path):
    """An old-style student folder (model.pt = a pickled module) is refused, naming the file."""
    from speechbrain_cald.convert import load_student

    folder = tmp_path / "student"
    folder.mkdir()
    marker = tmp_path / "marker"
    (folder / "cald_conversion.json").write_text(json.dumps({
        "family": "speechbrain_transformer_asr", "mixer": "bimamba2", "mixer_options": {},
        "init": "default", "teacher_class": SB_CLASS, "replaced": []}))
    _crafted_pickle(folder / "model.pt", marker)
    with pytest.raises(ValueError, match="model.pt"):
        load_student(folder)
    assert not marker.exists()


def test_save_student_writes_no_pickle_for_a_speechbrain_model_without_hparams(tmp_path):
    from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR

    from speechbrain_cald.convert import save_student, to_linear_time

    student = to_linear_time(TransformerASR(**SB_HPARAMS), "bimamba2", **TINY_MIXER)
    with pytest.raises(ValueError, match="hparams"):
        save_student(student, tmp_path / "s")
    assert not (tmp_path / "s" / "model.pt").exists()


def test_crafted_weights_files_of_model_folders_run_no_code(tmp_path):
    """model.ckpt of a SpeechBrain teacher / student: weights only, the error names the file."""
    from speechbrain_cald.convert import load_student, load_teacher

    folder = _sb_student_folder(tmp_path / "student")
    marker = tmp_path / "marker"
    _crafted_pickle(folder / "model.ckpt", marker)
    with pytest.raises(ValueError, match="model.ckpt"):
        load_student(folder)
    (folder / "cald_conversion.json").unlink()
    with pytest.raises(ValueError, match="model.ckpt"):
        load_teacher(folder)
    assert not marker.exists()


def test_crafted_pytorch_model_bin_runs_no_code(tmp_path):
    """A transformers teacher whose weights are a pickle (pytorch_model.bin): transformers reads it
    weights-only; the error names the file."""
    from speechbrain_cald.convert import load_teacher

    folder = _bert_folder(tmp_path / "bert")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "marker"
    _crafted_pickle(folder / "pytorch_model.bin", marker)
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        load_teacher(folder)
    assert not marker.exists()


def test_crafted_rng_checkpoint_runs_no_code(tmp_path):
    from speechbrain_cald.distill.checkpoint import RNGState

    marker = tmp_path / "marker"
    path = _crafted_pickle(tmp_path / "rng.ckpt", marker)
    with pytest.raises(ValueError, match="rng.ckpt"):
        RNGState()._load(path, end_of_epoch=True)
    assert not marker.exists()


def test_rng_checkpoint_is_written_without_numpy_or_python_objects(tmp_path):
    """The new rng.ckpt loads with weights_only=True and no allow-list, and restores every generator."""
    from speechbrain_cald.distill.checkpoint import RNGState

    path = tmp_path / "rng.ckpt"
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    RNGState()._save(path)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    torch.load(path, weights_only=True)  # no numpy globals needed
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    RNGState()._load(path, end_of_epoch=True)
    got = (random.random(), np.random.rand(), torch.rand(1))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_old_rng_checkpoints_stay_readable_through_the_allow_list(tmp_path):
    """rng.ckpt written before (random.getstate() / np.random.get_state() tuples, numpy arrays)."""
    from speechbrain_cald.distill.checkpoint import RNGState

    random.seed(4), np.random.seed(5), torch.manual_seed(6)
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "cuda": []}
    torch.save(old, tmp_path / "rng.ckpt")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    RNGState()._load(tmp_path / "rng.ckpt", end_of_epoch=True)
    got = (random.random(), np.random.rand(), torch.rand(1))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


@pytest.mark.parametrize("recoverable", ["model", "optimizer", "scheduler", "lr_schedule", "exp_schedule", "sb_schedule",
                                         "rng", "guide"])
def test_crafted_checkpoint_files_run_no_code_on_recovery(tmp_path, monkeypatch, recoverable):
    """Every file of a checkpoint, through the Checkpointer DistillBrain uses.

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD makes torch.load unpickle wherever the caller did not
    ask for weights_only=True explicitly (so does a torch older than 2.6): ours always ask, and
    SpeechBrain's own loaders (its schedulers: ``torch.load(path)``) run weights-only forced.
    """
    from speechbrain.nnet.schedulers import WarmAndExpDecayLRSchedule
    from speechbrain.utils.checkpoints import Checkpointer

    from speechbrain_cald.distill.checkpoint import RNGState, make_atomic
    from speechbrain_cald.distill.guides import UnguidedGuide
    from speechbrain_cald.distill.schedules import WarmupCosineLR, WarmupExpDecayLR

    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    recoverables = {
        "model": model,
        "optimizer": optimizer,
        "scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=1),
        "lr_schedule": WarmupCosineLR(lr=0.1, total_steps=10),
        "exp_schedule": WarmupExpDecayLR(lr=0.1, final_lr=0.001, warmup_steps=2, decay_steps=8),
        "sb_schedule": WarmAndExpDecayLRSchedule(lr=0.1, n_warmup_steps=2, total_steps=10),
        "rng": RNGState(),
        "guide": UnguidedGuide(),
    }
    checkpointer = make_atomic(Checkpointer(tmp_path / "ckpt", recoverables))
    saved = checkpointer.save_checkpoint()
    marker = tmp_path / "marker"
    _crafted_pickle(saved.paramfiles[recoverable], marker)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ValueError, match=f"{recoverable}.ckpt"):
        checkpointer.recover_if_possible()
    assert not marker.exists()
    assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") == "1"  # the caller's setting is restored
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_checkpoint_with_speechbrain_schedulers_still_round_trips(tmp_path):
    from speechbrain.nnet.schedulers import WarmAndExpDecayLRSchedule

    from speechbrain_cald.distill.checkpoint import AtomicCheckpointer, RNGState

    saved = WarmAndExpDecayLRSchedule(lr=0.1, n_warmup_steps=2, total_steps=10)
    saved.current_step = 7
    AtomicCheckpointer(tmp_path, {"sched": saved, "rng": RNGState()}).save_checkpoint()
    loaded = WarmAndExpDecayLRSchedule(lr=0.1, n_warmup_steps=2, total_steps=10)
    AtomicCheckpointer(tmp_path, {"sched": loaded, "rng": RNGState()}).recover_if_possible()
    assert loaded.current_step == 7


def test_checkpoints_still_round_trip(tmp_path):
    from speechbrain_cald.distill.checkpoint import AtomicCheckpointer

    model, other = nn.Linear(2, 2), nn.Linear(2, 2)
    AtomicCheckpointer(tmp_path, {"model": model}).save_checkpoint()
    AtomicCheckpointer(tmp_path, {"model": other}).recover_if_possible()
    assert torch.equal(model.weight, other.weight)


# ---------------------------------------------------------------- names of code
def test_hparams_json_naming_popen_is_refused(tmp_path):
    from speechbrain_cald.convert import load_student, load_teacher

    marker = tmp_path / "marker"
    folder = _sb_student_folder(tmp_path / "student")
    (folder / "hparams.json").write_text(json.dumps(_popen_touching(marker)))
    with pytest.raises(ValueError, match=r"hparams.json.*'class'.*subprocess.Popen"):
        load_student(folder)
    (folder / "cald_conversion.json").unlink()
    with pytest.raises(ValueError, match=r"hparams.json.*'class'.*subprocess.Popen"):
        load_teacher(folder)
    assert not marker.exists()


def test_converter_cli_on_a_crafted_teacher_runs_no_code(tmp_path):
    """The issue's demonstration: `python -m speechbrain_cald.convert` on an hparams.json naming Popen."""
    import subprocess

    marker = tmp_path / "marker"
    folder = _sb_teacher_folder(tmp_path / "teacher")
    (folder / "hparams.json").write_text(json.dumps(_popen_touching(marker)))
    result = subprocess.run([sys.executable, "-m", "speechbrain_cald.convert", str(folder), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1"))
    assert result.returncode != 0
    assert "hparams.json" in result.stderr and "subprocess.Popen" in result.stderr, result.stderr[-2000:]
    assert not marker.exists()


def test_classes_inside_hparams_kwargs_come_from_the_allow_list(tmp_path, evil_module):
    from speechbrain_cald.convert import load_teacher

    name, marker = evil_module
    folder = _sb_teacher_folder(tmp_path / "teacher")
    hparams = json.loads((folder / "hparams.json").read_text())
    hparams["kwargs"]["activation"] = {"__class__": f"{name}.Model"}
    (folder / "hparams.json").write_text(json.dumps(hparams))
    with pytest.raises(ValueError, match=rf"hparams.json.*'kwargs.activation'.*{name}.Model"):
        load_teacher(folder)
    hparams["kwargs"]["activation"] = {"__class__": "subprocess.Popen"}
    (folder / "hparams.json").write_text(json.dumps(hparams))
    with pytest.raises(ValueError, match=r"'kwargs.activation'.*subprocess.Popen"):
        load_teacher(folder)
    assert not marker.exists()
    # the classes SpeechBrain's constructors take do load
    hparams["kwargs"]["activation"] = {"__class__": "torch.nn.modules.activation.GELU"}
    (folder / "hparams.json").write_text(json.dumps(hparams))
    assert isinstance(load_teacher(folder).encoder.layers[0].pos_ffn.ffn[1], nn.GELU)


def test_config_architectures_naming_a_module_is_refused(tmp_path, evil_module):
    from speechbrain_cald.convert import load_teacher

    name, marker = evil_module
    folder = _bert_folder(tmp_path / "bert")
    _edit_json(folder / "config.json", architectures=[f"{name}.Model"])
    with pytest.raises(ValueError, match=rf"config.json.*'architectures'.*{name}.Model"):
        load_teacher(folder)
    assert not marker.exists()
    assert name not in sys.modules


def test_transformers_class_names_still_load(tmp_path):
    from speechbrain_cald.convert import load_teacher

    folder = _bert_folder(tmp_path / "bert")
    _edit_json(folder / "config.json", architectures=["transformers.models.bert.modeling_bert.BertModel"])
    assert type(load_teacher(folder)).__name__ == "BertModel"
    assert type(load_teacher(folder, model_class="BertForMaskedLM")).__name__ == "BertForMaskedLM"


@pytest.mark.parametrize("key", ["teacher_class", "mixer"])
def test_conversion_record_naming_a_module_is_refused(tmp_path, evil_module, key):
    from speechbrain_cald.convert import load_student

    name, marker = evil_module
    folder = _bert_student_folder(tmp_path / "student")
    value = f"{name}.Model" if key == "teacher_class" else f"{name}:Model"
    _edit_json(folder / "cald_conversion.json", **{key: value})
    with pytest.raises(ValueError, match=rf"cald_conversion.json.*'{key}'.*{name}"):
        load_student(folder)
    assert not marker.exists()
    assert name not in sys.modules


def test_sharing_record_naming_a_module_is_refused(tmp_path, evil_module):
    from speechbrain_cald.convert.share import load_shared_student

    name, marker = evil_module
    folder = _bert_folder(tmp_path / "student")
    (folder / "cald_sharing.json").write_text(json.dumps({"teacher_class": f"{name}.Model", "sharing": {}}))
    with pytest.raises(ValueError, match=rf"cald_sharing.json.*'teacher_class'.*{name}"):
        load_shared_student(folder)
    assert not marker.exists()
