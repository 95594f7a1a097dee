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

from speechbrain_cald.experiment import LOCK_NAME, OutputFolderInUse, start_experiment

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
    assert exp.lock is not None and (out / "hyperparams.yaml").exists()
    assert f'"pid": {os.getpid()}' in (out / LOCK_NAME).read_text()
    assert f"taking over the lock of an earlier run that is no longer running" in capsys.readouterr().out


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
