"""recipes/lib/stages.sh: option parsing, stage guards, idempotence, timings."""

import subprocess
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "recipes" / "lib" / "stages.sh"

SCRIPT = r"""
source "{lib}"
out="{tmp}/out"; options_help[out]="output folder"
stage_times="{tmp}/times.tsv"; stage_commands="{tmp}/commands.sh"
parse_options "$@"
if stage 0 "make a" "$out/a.txt"; then
    mkdir -p "$out"; run touch "$out/a.txt"; echo ran0 >> "{tmp}/log"
    stage_done
fi
if stage 1 "make b" "$out/b.txt"; then
    mkdir -p "$out"; run touch "$out/b.txt"; echo ran1 >> "{tmp}/log"
    stage_done
fi
"""


@pytest.fixture
def recipe(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text(SCRIPT.format(lib=LIB, tmp=tmp_path))

    def run(*args):
        return subprocess.run(["bash", str(script), *args], capture_output=True, text=True)

    return run


def test_runs_then_skips_then_forces(recipe, tmp_path):
    first = recipe()
    assert first.returncode == 0, first.stderr
    assert "stage 0: make a: running" in first.stdout and "stage 1: make b: done in" in first.stdout
    second = recipe()
    assert "stage 0: make a: skipped, outputs exist" in second.stdout
    assert (tmp_path / "log").read_text().split() == ["ran0", "ran1"]
    recipe("--force", "true", "--stage", "1")
    assert (tmp_path / "log").read_text().split() == ["ran0", "ran1", "ran1"]
    times = [line.split("\t") for line in (tmp_path / "times.tsv").read_text().splitlines()]
    assert [t[:2] for t in times] == [["0", "make a"], ["1", "make b"], ["1", "make b"]]
    assert all(float(t[2]) >= 0 for t in times)
    assert "touch" in (tmp_path / "commands.sh").read_text()


def test_stage_window(recipe, tmp_path):
    out = recipe("--stage=1", "--stop_stage", "1")
    assert "stage 0: make a: skipped (outside --stage 1 --stop_stage 1)" in out.stdout
    assert (tmp_path / "log").read_text().split() == ["ran1"]


def test_declared_option_is_set(recipe, tmp_path):
    other = tmp_path / "elsewhere"
    assert recipe("--out", str(other)).returncode == 0
    assert (other / "a.txt").exists() and (other / "b.txt").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus", "1"], "unknown option --bogus"),
        (["--stage"], "needs a value"),
        (["stray"], "unexpected argument"),
        (["--stage", "x"], "integers"),
        (["--force", "yes"], "true or false"),
    ],
)
def test_bad_options_print_usage_and_exit_2(recipe, args, message):
    out = recipe(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Usage:" in out.stderr and "--out" in out.stderr


def test_help_lists_options(recipe):
    out = recipe("--help")
    assert out.returncode == 0 and "--stop_stage" in out.stdout and "output folder" in out.stdout


def test_failing_command_stops_the_recipe(tmp_path):
    script = tmp_path / "fail.sh"
    script.write_text(f'source "{LIB}"\nparse_options "$@"\nif stage 0 "fails"; then\n  run false\n  stage_done\nfi\necho after\n')
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert out.returncode != 0 and "after" not in out.stdout and "done in" not in out.stdout


def test_stage_after_stop_stage_is_a_usage_error(recipe, tmp_path):
    out = recipe("--stage", "5", "--stop_stage", "2")
    assert out.returncode == 2 and "nothing would run" in out.stderr
    assert not (tmp_path / "log").exists()


CORPUS = r"""
source "{lib}"
recipe_dir="{tmp}"
students="s_a s_a:waypoint"
corpus_options
parse_options "$@"
require_options data_folder pretrained_dir
cd "{tmp}"
for entry in $students; do student_plan "$entry"; done
"""


@pytest.fixture
def corpus_recipe(tmp_path):
    (tmp_path / "hparams").mkdir()
    (tmp_path / "hparams" / "s_a.yaml").write_text("seed: 1\nguide: target  # the default\n")
    script = tmp_path / "run.sh"
    script.write_text(CORPUS.format(lib=LIB, tmp=tmp_path))
    return lambda *args: subprocess.run(["bash", str(script), *args], capture_output=True, text=True)


def test_corpus_recipe_needs_data_and_pretrained_dir(corpus_recipe):
    out = corpus_recipe("--data_folder", "/d")
    assert out.returncode == 2 and "missing --pretrained_dir" in out.stderr
    assert "--data_folder" not in out.stderr.splitlines()[0]  # only what is missing
    out = corpus_recipe()
    assert "missing --data_folder --pretrained_dir: pass --data_folder ... --pretrained_dir ..." in out.stderr


def test_corpus_recipe_student_plans(corpus_recipe, tmp_path):
    out = corpus_recipe("--data_folder", "/d", "--pretrained_dir", "/p")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == [
        f"s_a target {tmp_path}/results/s_a_target",
        f"s_a waypoint {tmp_path}/results/s_a_waypoint",
    ]
    out = corpus_recipe("--data_folder", "/d", "--pretrained_dir", "/p", "--guide", "hybrid", "--exp", "/e")
    assert out.stdout.split("\n")[:2] == ["s_a hybrid /e/s_a_hybrid", "s_a waypoint /e/s_a_waypoint"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--guide", "targett"], "unknown guide 'targett'"),
        (["--students", "s_a:foo"], "unknown guide 'foo'"),
        (["--students", "nope"], "no hparams/nope.yaml"),
    ],
)
def test_corpus_recipe_bad_guides_and_students(corpus_recipe, args, message):
    out = corpus_recipe("--data_folder", "/d", "--pretrained_dir", "/p", *args)
    assert out.returncode == 2 and message in out.stderr


NEWER = r"""
source "{lib}"
opt="a"; options_help[opt]="an option the result depends on"
parse_options "$@"
stamp_file "{tmp}/options" "$opt"
if stage 4 "summarise" "{tmp}/summary.txt" --newer_than "{tmp}/model.ckpt" "{tmp}/options"; then
    cat "{tmp}/model.ckpt" "{tmp}/options" > "{tmp}/summary.txt"; echo ran >> "{tmp}/log"
    stage_done
fi
"""


def test_stage_with_inputs_skips_only_while_its_outputs_are_newer(tmp_path):
    """Stage 4 of a recipe has outputs and inputs: it reran every time (issue 16)."""
    script = tmp_path / "run.sh"
    script.write_text(NEWER.format(lib=LIB, tmp=tmp_path))
    run = lambda *a: subprocess.run(["bash", str(script), *a], capture_output=True, text=True)  # noqa: E731
    (tmp_path / "model.ckpt").write_text("v1")
    assert "summarise: running" in run().stdout
    again = run()
    assert "skipped, outputs exist and are newer than its inputs" in again.stdout
    # a newer model: rerun, saying why
    import os
    import time

    earlier = time.time() - 10  # the summary was written before the model changed
    os.utime(tmp_path / "summary.txt", (earlier, earlier))
    os.utime(tmp_path / "options", (earlier, earlier))
    out = run()
    assert f"running (changed since its outputs were written: {tmp_path}/model.ckpt)" in out.stdout
    assert "skipped" in run().stdout
    # another option value: the stamp changes, the stage reruns; the same value again: skipped
    os.utime(tmp_path / "summary.txt", (earlier, earlier))  # not to rest on sub-second file times
    assert "running" in run("--opt", "b").stdout
    assert "skipped" in run("--opt", "b").stdout
    assert (tmp_path / "log").read_text().split() == ["ran", "ran", "ran"]
    assert (tmp_path / "summary.txt").read_text() == "v1b\n"
