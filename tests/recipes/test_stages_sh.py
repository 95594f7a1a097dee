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
for entry in $students; do student_plan "$entry"; echo "$plan_name $plan_guide $plan_out"; done
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


DRIVER = r"""
source "{lib}"
recipe_dir="{tmp}/recipes/C/T"
extra="";  options_help[extra]="a path option of the recipe"
corpus_options students="s_a s_a:waypoint" results_title="C T"
report_options speechbrain_cald.evaluation.x "--flag 1"
parse_options "$@"
begin_recipe extra
echo "PWD=$PWD"
for v in data_folder pretrained_dir exp results_md extra data stage_times stage_commands stop_stage results_title \
         repo_root recipe_command; do echo "$v=${{!v}}"; done
teacher_and_student_stages hparams/t.yaml "Teacher" --data_folder="$data_folder" --k="a b"
models=("teacher=$exp/teacher")
student_models s_
printf 'model %s\n' "${{models[@]}}"
"""


@pytest.fixture
def driver(tmp_path):
    """A corpus recipe over the shared driver, `python` replaced by a stub (the commands are logged)."""
    recipe = tmp_path / "recipes" / "C" / "T"
    (recipe / "hparams").mkdir(parents=True)
    for name in ("t", "s_a"):
        (recipe / "hparams" / f"{name}.yaml").write_text("guide: target\n")
    script = recipe / "run.sh"
    script.write_text(DRIVER.format(lib=LIB, tmp=tmp_path))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "python").chmod(0o755)
    (tmp_path / "cwd").mkdir()
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}

    def run(*args):
        out = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, cwd=tmp_path / "cwd", env=env)
        values = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line and " " not in line.split("=")[0])
        return out, values

    return run


def test_begin_recipe_makes_paths_absolute_and_logs_in_exp(driver, tmp_path):
    out, v = driver("--data_folder", "corpus", "--pretrained_dir", "/models/p", "--exp", "e", "--extra", "x/y",
                    "--teacher_args", "--lr=1")
    assert out.returncode == 0, out.stderr
    cwd, recipe = tmp_path / "cwd", tmp_path / "recipes" / "C" / "T"
    assert v["PWD"] == str(recipe)  # the stages run from the recipe folder
    assert (v["data_folder"], v["pretrained_dir"], v["exp"], v["extra"]) == (
        f"{cwd}/corpus", "/models/p", f"{cwd}/e", f"{cwd}/x/y")
    assert (v["results_md"], v["data"]) == (f"{cwd}/e/RESULTS.md", f"{cwd}/e/data")
    assert (v["stage_times"], v["stage_commands"]) == (f"{cwd}/e/stage_times.tsv", f"{cwd}/e/commands.sh")
    assert (v["stop_stage"], v["results_title"], v["repo_root"]) == ("4", "C T", str(tmp_path))
    assert v["recipe_command"] == ("bash recipes/C/T/run.sh --data_folder corpus --pretrained_dir /models/p --exp e "
                                   "--extra x/y --teacher_args --lr=1")
    # stages 2-3: the teacher, then each student with its guide, every call with the shared overrides
    assert (cwd / "e" / "commands.sh").read_text().splitlines() == [
        f"python train.py hparams/t.yaml --data_folder={cwd}/corpus --k=a\\ b --output_folder={cwd}/e/teacher --lr=1 ",
        f"python train.py hparams/s_a.yaml --data_folder={cwd}/corpus --k=a\\ b --teacher_folder={cwd}/e/teacher "
        f"--output_folder={cwd}/e/s_a_target --guide=target ",
        f"python train.py hparams/s_a.yaml --data_folder={cwd}/corpus --k=a\\ b --teacher_folder={cwd}/e/teacher "
        f"--output_folder={cwd}/e/s_a_waypoint --guide=waypoint ",
    ]
    assert [line for line in out.stdout.splitlines() if line.startswith("model ")] == [
        f"model teacher={cwd}/e/teacher", f"model a_target={cwd}/e/s_a_target", f"model a_waypoint={cwd}/e/s_a_waypoint"]
    assert out.stdout.count(": running") == 3  # no model existed: stage 2 and both students ran


def test_begin_recipe_needs_data_and_pretrained_dir_and_keeps_absolute_paths(driver, tmp_path):
    out, _ = driver("--pretrained_dir", "/p")
    assert out.returncode == 2 and "missing --data_folder" in out.stderr
    out, v = driver("--data_folder", "/d", "--pretrained_dir", "/p", "--results_md", "/r/R.md", "--stop_stage", "2")
    assert out.returncode == 0, out.stderr
    assert (v["data_folder"], v["results_md"], v["exp"]) == ("/d", "/r/R.md", str(tmp_path / "recipes" / "C" / "T" / "results"))
    assert "stage 3" in out.stdout and "skipped (outside --stage 0 --stop_stage 2)" in out.stdout


EVAL = r"""
source "{lib}"
exp="{tmp}/exp"; results_md="$exp/RESULTS.md"; eval_args="${{EVAL_ARGS:-}}"
parse_options "$@"
models=("a=$exp/a" "ref=$exp/no_checkpoint_here")
if evaluation_stage "evaluate" "sets: ${{SETS:-test}}" "{tmp}/lm.arpa"; then
    echo run >> "{tmp}/log"; touch "$results_md"; stage_done
fi
"""


def test_evaluation_stage_skips_until_a_model_an_input_or_an_option_changes(tmp_path):
    import os

    (tmp_path / "exp" / "a").mkdir(parents=True)
    ckpt, lm, results = tmp_path / "exp" / "a" / "model.ckpt", tmp_path / "lm.arpa", tmp_path / "exp" / "RESULTS.md"
    ckpt.write_text("w"), lm.write_text("lm")
    script = tmp_path / "eval.sh"
    script.write_text(EVAL.format(lib=LIB, tmp=tmp_path))

    def run(**env):
        out = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={**os.environ, **env})
        assert out.returncode == 0, out.stderr
        return out.stdout

    def changed_after_results(path):  # RESULTS.md dated back: `path` is now newer than it
        t = os.stat(path).st_mtime - 10
        os.utime(results, (t, t))

    run()
    assert "skipped, outputs exist and are newer" in run()  # a model folder without model.ckpt is fine
    changed_after_results(ckpt)
    out = run()
    assert "running (changed since its outputs were written: " in out and str(ckpt) in out
    assert "skipped" in run()
    changed_after_results(lm)
    out = run()
    assert "running (changed since its outputs were written: " in out and str(lm) in out
    assert ".stage4_options" in run(SETS="test other")  # another test set: the options changed
    assert ".stage4_options" in run(SETS="test other", EVAL_ARGS="--beam 5")
    assert "skipped" in run(SETS="test other", EVAL_ARGS="--beam 5")
    assert (tmp_path / "log").read_text().split() == ["run"] * 5


PUBLISHED = r"""
source "{lib}"
recipe_dir="{tmp}/recipes/C/T"
published_results_md="$recipe_dir/RESULTS.md"
corpus_options
parse_options "$@"
recipe_paths
echo "results_md=$results_md"
"""


def test_a_run_elsewhere_writes_its_results_into_its_experiment(tmp_path):
    """Issue 24: with --exp elsewhere a mini recipe wrote RESULTS.md and its plot over the tracked files."""
    recipe = tmp_path / "recipes" / "C" / "T"
    recipe.mkdir(parents=True)
    script = recipe / "run.sh"
    script.write_text(PUBLISHED.format(lib=LIB, tmp=tmp_path))

    def results_md(*args):
        out = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return out.stdout.split("results_md=")[1].strip()

    assert results_md() == f"{recipe}/RESULTS.md"  # the default experiment: the published record
    assert results_md("--exp", "recipes/C/T/results") == f"{recipe}/RESULTS.md"
    assert results_md("--exp", "elsewhere") == f"{tmp_path}/elsewhere/RESULTS.md"
    assert results_md("--exp", "elsewhere", "--results_md", "R.md") == f"{tmp_path}/R.md"


def test_stage_4_never_reports_another_experiments_results(tmp_path):
    """Issue 24: two experiments, one --results_md: stage 4 of the second skipped, its outputs newer than its
    models, and the file reported the first one's results."""
    import os

    script = tmp_path / "eval.sh"
    script.write_text(EVAL.format(lib=LIB, tmp=tmp_path).replace('results_md="$exp/RESULTS.md"',
                                                                   'results_md="{tmp}/RESULTS.md"'.format(tmp=tmp_path)))
    results = tmp_path / "RESULTS.md"

    def run(exp):
        text = script.read_text().replace(f'exp="{tmp_path}/exp"', f'exp="{tmp_path}/{exp}"')
        (tmp_path / "eval_now.sh").write_text(text.replace("touch \"$results_md\"", f"echo {exp} > \"$results_md\""))
        out = subprocess.run(["bash", str(tmp_path / "eval_now.sh")], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout

    (tmp_path / "lm.arpa").write_text("lm")
    (tmp_path / "exp_a" / "a").mkdir(parents=True)
    (tmp_path / "exp_b" / "a").mkdir(parents=True)
    (tmp_path / "exp_a" / "a" / "model.ckpt").write_text("a")
    (tmp_path / "exp_b" / "a" / "model.ckpt").write_text("b")
    for path in ("lm.arpa", "exp_a/a/model.ckpt", "exp_b/a/model.ckpt"):  # all there before either evaluation
        t = os.stat(tmp_path / path).st_mtime - 100
        os.utime(tmp_path / path, (t, t))
    assert "evaluate: running" in run("exp_a") and results.read_text() == "exp_a\n"
    out = run("exp_b")
    assert f"{results} was not written by this experiment's stage 4 ({tmp_path}/exp_b)" in out
    assert "evaluate: running" in out and results.read_text() == "exp_b\n"
    assert "skipped, outputs exist" in run("exp_b")
    assert "evaluate: running" in run("exp_a") and results.read_text() == "exp_a\n"
