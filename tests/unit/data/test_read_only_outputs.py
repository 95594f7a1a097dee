"""Stage 0 into a folder that cannot be written: the project's message, no traceback (issue 24 item 6).

`start_experiment` covers every train.py (tests/unit/test_experiment.py); stage 0 has its own entry
points (the text recipes' `prepare`, the LM corpus's token_blocks, the speech corpora's prepare.py),
each of which wrote its first file and died with `PermissionError: [Errno 13]` and a traceback.
"""

import subprocess
import sys
import textwrap

import pytest

from speechbrain_cald.data.preparation import run_preparation

MESSAGE = "cannot write where this run must (checked before training, nothing was trained): save_folder "


def test_token_blocks_stage_0(read_only_folder, tmp_path):
    (tmp_path / "pile" / "train").mkdir(parents=True)
    run = subprocess.run([sys.executable, "-m", "speechbrain_cald.data.token_blocks", "--data_folder",
                          str(tmp_path / "pile"), "--save_folder", read_only_folder], capture_output=True, text=True)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().startswith(f"error: {MESSAGE}{read_only_folder}: ")


def test_speech_corpus_prepare_py(read_only_folder, capsys):
    def prepare(data_folder, save_folder):
        raise AssertionError("the corpus is not read when its outputs cannot be written")

    assert run_preparation(prepare, data_folder="/data", save_folder=read_only_folder) == 1
    assert capsys.readouterr().err.startswith(f"prepare.py: {MESSAGE}{read_only_folder}: ")


def test_text_recipe_prepare(read_only_folder, tmp_path):
    yaml = tmp_path / "hp.yaml"
    yaml.write_text(textwrap.dedent(f"""\
        manifest_folder: {read_only_folder}
        prepare: !name:builtins.print
    """))
    run = subprocess.run([sys.executable, "-m", "speechbrain_cald.tasks.text_classification", "prepare", str(yaml)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().startswith(f"error: {MESSAGE.replace('save_folder', 'manifest_folder')}{read_only_folder}")
