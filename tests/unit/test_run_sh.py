"""The command-line contract of the top-level run.sh (ESPnet conventions)."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args):
    return subprocess.run(
        ["bash", str(ROOT / "run.sh"), "--skip-setup", *args],
        capture_output=True, text=True, timeout=60,
    )


def test_help_lists_stages_and_recipes():
    out = run("--help")
    assert out.returncode == 0
    assert "--stop_stage" in out.stdout and "--recipe" in out.stdout
    for recipe in sorted(p.parent.relative_to(ROOT / "recipes") for p in ROOT.glob("recipes/*/*/run.sh")):
        assert str(recipe) in out.stdout


def test_unknown_recipe_gets_usage_and_exit_2():
    out = run("--recipe", "NoSuchCorpus/ASR")
    assert out.returncode == 2
    assert "unknown recipe" in out.stderr and "Usage:" in out.stderr


def test_bad_stage_gets_usage_and_exit_2():
    out = run("--stage", "three")
    assert out.returncode == 2 and "Usage:" in out.stderr


def test_stray_argument_gets_usage_and_exit_2():
    out = run("stray")
    assert out.returncode == 2 and "unexpected argument" in out.stderr


def test_a_recipe_option_value_may_start_with_dashes():
    """`--teacher_args "--number_of_epochs=2"` (the recipe's own help shows this form) was refused."""
    out = run("--stage", "9", "--stop_stage", "9", "--teacher_args", "--number_of_epochs=2 --lr=0.1")
    assert out.returncode == 0, out.stderr
    assert "recipes/mini/ASR/run.sh --stage 9 --stop_stage 9 --teacher_args --number_of_epochs=2 --lr=0.1" in out.stdout
    assert "stage 2: Fine-tune the pretrained conformer on the task" in out.stdout  # the recipe ran (every stage outside 9..9)
    out = run("--teacher_args")
    assert out.returncode == 2 and "needs a value" in out.stderr


def test_the_default_recipe_checks_guides_and_the_stage_window():
    out = run("--guide", "foo")
    assert out.returncode == 2 and "--guide: unknown guide 'foo' (expected one of: unguided target" in out.stderr
    out = run("--stage", "5", "--stop_stage", "2")
    assert out.returncode == 2 and "nothing would run" in out.stderr


def test_ci_calls_the_readme_test_command():
    assert "./run.sh --test" in (ROOT / ".ci" / "run").read_text()


def _recipe_args(recipe, tmp_path):
    """The options a recipe cannot start without (existing folders: nothing is read before the checks)."""
    if recipe.startswith("mini/"):
        return []
    return ["--data_folder", str(tmp_path), "--pretrained_dir", str(tmp_path),
            *(["--task", "sst2"] if recipe.startswith("GLUE/") else [])]


RECIPES = sorted(str(p.parent.relative_to(ROOT / "recipes")) for p in ROOT.glob("recipes/*/*/run.sh"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_an_unknown_student_stops_at_the_usage_error_and_creates_nothing(tmp_path, recipe):
    """Issue 24: mini/ASR went on past `--students nosuch` (the error was lost in a $(...)); any refused run
    must stop before it creates a folder."""
    exp = tmp_path / "new" / "exp"
    out = run("--recipe", recipe, *_recipe_args(recipe, tmp_path), "--exp", str(exp), "--students", "nosuch")
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "student 'nosuch': no hparams/nosuch.yaml" in out.stderr and "Usage:" in out.stderr
    assert "== stage" not in out.stdout and not (tmp_path / "new").exists()


def test_a_hub_id_as_pretrained_dir_gets_the_hub_hint_and_creates_nothing(tmp_path):
    """Issue 24: run.sh made `facebook/wav2vec2-base` <cwd>/facebook/wav2vec2-base; stage 2 then said the folder
    does not exist, and the stages before it had run."""
    exp = tmp_path / "exp"
    out = subprocess.run(["bash", str(ROOT / "run.sh"), "--skip-setup", "--recipe", "LibriSpeech/ASR",
                          "--data_folder", str(tmp_path), "--pretrained_dir", "facebook/wav2vec2-base", "--exp", str(exp)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2
    assert "--pretrained_dir source 'facebook/wav2vec2-base' looks like a model-hub id" in out.stderr
    assert "huggingface-cli download facebook/wav2vec2-base" in out.stderr
    assert "== stage" not in out.stdout and not exp.exists()
