"""The command-line contract of the top-level run.sh (ESPnet conventions)."""

import subprocess
from pathlib import Path

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
