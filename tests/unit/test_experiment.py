"""start_experiment's checks before a run writes anything: typed overrides, the folder lock, writability.

Issue 16's probes: `--lr=abc` failed inside AdamW; two runs in one output folder
deleted each other's checkpoints; a read-only save/ failed after the first epoch.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from speechbrain_cald.distill.run_safety import training_starts
from speechbrain_cald.experiment import LOCK_NAME, OutputFolderInUse, start_experiment
from speechbrain_cald.options_record import OptionsDiffer

YAML = textwrap.dedent("""\
    output_folder: !PLACEHOLDER
    save_folder: !ref <output_folder>/save
    lr: 0.001
    number_of_epochs: 2
    teacher_train_mode: False
    guide: target
    opt_class: !name:torch.optim.AdamW
        lr: !ref <lr>
""")


@pytest.fixture
def hp(tmp_path):
    path = tmp_path / "hp.yaml"
    path.write_text(YAML)
    return str(path)


def test_overrides_of_numbers_and_booleans_are_checked(hp, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(TypeError) as err:
        start_experiment([hp, f"--output_folder={out}", "--lr=abc", "--number_of_epochs=2.5",
                          "--teacher_train_mode=maybe", "--guide=waypoint"])
    message = str(err.value)
    assert "--lr=abc: `lr` is a number in hp.yaml (default 0.001), got 'abc'" in message
    assert "--number_of_epochs=2.5: `number_of_epochs` is an integer" in message
    assert "--teacher_train_mode=maybe: `teacher_train_mode` is a boolean" in message
    assert "guide" not in message  # a string may be any string
    assert not out.exists()  # nothing was created
    exp = start_experiment([hp, f"--output_folder={out}", "--lr=1", "--number_of_epochs=3"])
    assert exp.hparams["lr"] == 1 and exp.hparams["number_of_epochs"] == 3


HOLD = textwrap.dedent("""\
    import sys, time
    from speechbrain_cald.experiment import lock_output_folder
    lock_output_folder(sys.argv[1], "train.py holder.yaml")
    print("locked", flush=True)
    time.sleep(120)
""")


def test_a_second_run_refuses_and_a_dead_runs_lock_is_taken_over(hp, tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputFolderInUse) as err:
            start_experiment([hp, f"--output_folder={out}"])
        message = str(err.value)
        assert f"output folder {out} is in use by another run (pid {holder.pid} on " in message
        assert "train.py holder.yaml" in message and "pass another --output_folder" in message
        assert not (out / "hyperparams.yaml").exists()  # the second run wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder died without cleaning up: its lock went with it
    exp = start_experiment([hp, f"--output_folder={out}"])
    assert exp.lock is not None and f'"pid": {os.getpid()}' in (out / LOCK_NAME).read_text()
    assert f"taking over the lock of an earlier run that is no longer running" in capsys.readouterr().out


def test_the_lock_of_a_run_that_ended_is_not_taken_over(hp, tmp_path, capsys):
    """Issue 24: "taking over the lock" was said after every finished or failed run, as if it had died."""
    out = tmp_path / "out"
    for ending in ("pass", "raise SystemExit(1)", "raise RuntimeError('failed run')"):
        done = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", ending), str(out)],
                              capture_output=True, text=True)
        assert done.stdout.strip() == "locked", done.stderr
        assert (out / LOCK_NAME).read_text() == ""  # emptied at exit
        start_experiment([hp, f"--output_folder={out}"])
        assert "taking over" not in capsys.readouterr().out
        from speechbrain_cald.experiment import _release_lock

        _release_lock(str(out))  # as this process would at its exit


def test_unwritable_save_folder_is_found_before_training(hp, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "save").write_text("a file where the checkpoints should go")
    with pytest.raises(SystemExit, match=r"save_folder .*/out/save: File exists|save_folder .*Not a directory"):
        start_experiment([hp, f"--output_folder={out}"])


def test_a_read_only_output_folder_gets_the_projects_message_not_a_traceback(hp, read_only_folder):
    """Issue 24 probe: the lock file was opened before the writability check, so a read-only output
    folder ended in a traceback of `PermissionError: [Errno 13] ... .cald_run.lock`."""
    with pytest.raises(SystemExit) as err:
        start_experiment([hp, f"--output_folder={read_only_folder}"])
    assert str(err.value).startswith(
        f"error: cannot write where this run must (checked before training, nothing was trained): "
        f"output_folder {read_only_folder}: ")
    script = f"from speechbrain_cald.experiment import start_experiment; start_experiment({[hp, f'--output_folder={read_only_folder}']!r})"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_save_folder_is_found_before_training(hp, tmp_path):
    out = tmp_path / "out"
    (out / "save").mkdir(parents=True)
    os.chmod(out / "save", 0o500)
    try:
        with pytest.raises(SystemExit, match="save_folder .*Permission denied"):
            start_experiment([hp, f"--output_folder={out}"])
    finally:
        os.chmod(out / "save", 0o700)


ARCH_YAML = YAML + textwrap.dedent("""\
    snapshot_dir: !ref <output_folder>/snapshots
    d_state: 64
    model: !new:torch.nn.Linear
        in_features: !ref <d_state>
        out_features: 2
""")


def _finished_folder(tmp_path, *options):
    """A folder as a finished run leaves it: the record, a checkpoint in save/, model.ckpt."""
    hp = tmp_path / "arch.yaml"
    hp.write_text(ARCH_YAML)
    out = tmp_path / "out"
    start_experiment([str(hp), f"--output_folder={out}", *options])
    training_starts()
    (out / "save" / "CKPT+1").mkdir(parents=True)
    (out / "snapshots").mkdir(exist_ok=True)  # check_writable made it
    (out / "snapshots" / "step_00000500.ckpt").write_bytes(b"a waypoint")
    (out / "model.ckpt").write_bytes(b"the trained weights")
    return str(hp), out


def _contents(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*")) if p.name != LOCK_NAME}


@pytest.mark.parametrize("options, named", [
    (["--d_state=32"], "`d_state` 64 there, 32 now (and what follows from them: `model`)"),
    (["--lr=0.005"], "`lr` 0.001 there, 0.005 now (and what follows from them: `opt_class`)"),
    (["--lr=0.005", "--guide=waypoint"],
     "`guide` 'target' there, 'waypoint' now; `lr` 0.001 there, 0.005 now (and what follows from them: `opt_class`)"),
])
def test_a_rerun_with_other_options_is_refused_and_leaves_the_folder_as_it_was(tmp_path, options, named):
    """Issue 24: --d_state=32 into a folder trained with 64 rewrote its record before failing; --lr "resumed"."""
    hp, out = _finished_folder(tmp_path)
    before = _contents(out)
    with pytest.raises(OptionsDiffer) as err:
        start_experiment([hp, f"--output_folder={out}", *options])
    training_starts()  # nothing of the refused run waits for training
    assert f"{out} holds a run trained with other options ({out}/hyperparams.yaml): {named}." in str(err.value)
    assert "--overwrite" in str(err.value)
    assert _contents(out) == before


def test_a_resume_may_train_longer_and_records_it_when_training_starts(tmp_path):
    hp, out = _finished_folder(tmp_path)
    exp = start_experiment([hp, f"--output_folder={out}", "--number_of_epochs=5"])
    assert exp.hparams["number_of_epochs"] == 5
    assert "number_of_epochs: 2" in (out / "hyperparams.yaml").read_text()  # not yet: a failure now changes nothing
    training_starts()
    assert "number_of_epochs: 5" in (out / "hyperparams.yaml").read_text()
    assert (out / "model.ckpt").exists() and (out / "save" / "CKPT+1").exists()  # resumed from


def test_overwrite_trains_afresh_from_when_training_starts(tmp_path):
    hp, out = _finished_folder(tmp_path)
    start_experiment([hp, f"--output_folder={out}", "--d_state=32", "--overwrite"])
    assert (out / "model.ckpt").exists() and "d_state: 64" in (out / "hyperparams.yaml").read_text()
    training_starts()
    assert not (out / "model.ckpt").exists() and list((out / "save").iterdir()) == []
    assert list((out / "snapshots").iterdir()) == []  # no waypoint of the earlier run guides a student
    assert "d_state: 32" in (out / "hyperparams.yaml").read_text()
    with pytest.raises(ValueError, match="--overwrite takes True or False"):
        start_experiment([hp, f"--output_folder={out}", "--overwrite=yes"])


PATHS = ["exp #1", "a: b", "it's \"q\"", "$HOME x", "données ü", "k=v"]


@pytest.mark.parametrize("name", PATHS)
def test_a_path_override_is_data_whatever_its_characters(tmp_path, name):
    """Issue 24: `--output_folder=/data/exp #1` was cut at the `#` (YAML's comment)."""
    hp = tmp_path / "hp.yaml"
    hp.write_text(YAML + "data_folder: !PLACEHOLDER\ntrain_csv: !ref <data_folder>/train.csv\n")
    out, data = tmp_path / name / "out", tmp_path / name / "data"
    exp = start_experiment([str(hp), f"--output_folder={out}", f"--data_folder={data}", "--lr=0.5"])
    training_starts()
    assert (exp.hparams["output_folder"], exp.hparams["save_folder"]) == (str(out), f"{out}/save")
    assert exp.hparams["train_csv"] == f"{data}/train.csv" and exp.hparams["lr"] == 0.5
    assert (out / "save").is_dir() and (out / "hyperparams.yaml").exists()
    with open(out / "hyperparams.yaml", encoding="utf-8") as f:
        from hyperpyyaml import load_hyperpyyaml

        assert load_hyperpyyaml(f)["train_csv"] == f"{data}/train.csv"  # the record reads back the same
