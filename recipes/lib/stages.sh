#!/usr/bin/env bash
# recipes/lib/stages.sh: the shared stage driver of every recipe's run.sh (ESPnet style).
#
# A recipe's run.sh declares its options as shell variables with defaults and a
# one-line help each, sources this file, then guards each stage:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/../../lib/stages.sh"
#   stage=0; stop_stage=4; force=false
#   data=data; options_help[data]="corpus folder"
#   parse_options "$@"                       # --key value | --key=value; unknown -> usage, exit 2
#   if stage 0 "Prepare the corpus" "$data/train.csv"; then
#       run python prepare.py "$data"
#       stage_done
#   fi
#
# A corpus recipe (the contract in RECIPES.md) declares the shared options with
# `corpus_options` (and `report_options` for stage 4), and after `parse_options`
# calls `begin_recipe`: a usage error without the two options it cannot run without
# (`require_options data_folder pretrained_dir`), absolute paths, logs in $exp, cd
# to the recipe folder. `student_plan NAME[:GUIDE]` resolves one entry of --students;
# `teacher_and_student_stages` runs stages 2-3 (train.py for the teacher, then for each
# student) and `student_models` lists the trained models for stage 4.
#
# `stage N TITLE OUTPUT... [--newer_than INPUT...]` runs the stage when N lies in
# [stage, stop_stage] and (--force true, or some OUTPUT is missing, or some INPUT is
# newer than an OUTPUT); it prints what it ran or why it skipped. A stage whose
# result depends on options too (which models stage 4 evaluates) lists a file
# written by `stamp_file FILE TEXT` among its inputs: the file changes only when TEXT does. `stage_done` prints the time taken and where the outputs are, and
# appends "N<TAB>title<TAB>seconds" to $stage_times (if set). `run CMD...` echoes a
# command, logs it to $stage_commands (if set) and runs it.

set -euo pipefail

# OpenMP threads sleep between operator calls instead of spinning: on cores shared with
# other work, spinning made a training step 80x slower (docs/bench/omp_wait.md). A value
# the user exported wins.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

# Logs: when stdout is a file or a pipe (nohup, CI, `| tee`), tqdm would write every
# progress refresh (~10 per second) into it; one line per 30 s keeps the log readable.
if [ ! -t 1 ] && [ -z "${TQDM_MININTERVAL:-}" ]; then
    export TQDM_MININTERVAL=30
fi

declare -gA options_help=(
    [stage]="first stage to run"
    [stop_stage]="last stage to run"
    [force]="true: rerun stages even when their outputs exist"
    [overwrite]="true: a rerun of stage 2/3 (--force true) may retrain a model folder trained with other options (train.py --overwrite)"
)
: "${stage:=0}" "${stop_stage:=100}" "${force:=false}" "${overwrite:=false}"
# The recipe: the script run (the last file of the source chain) and its folder, unless it set them.
: "${recipe_script:=${BASH_SOURCE[-1]}}"
: "${recipe_dir:=$(cd "$(dirname "$recipe_script")" && pwd)}"
: "${stage_times:=}" "${stage_commands:=}"

usage() {
    local name
    echo "Usage: $(basename "${recipe_script:-$0}") [--key value | --key=value ...]"
    [ -n "${recipe_description:-}" ] && echo && echo "$recipe_description"
    echo
    echo "Options (default in brackets):"
    for name in $(printf '%s\n' "${!options_help[@]}" | sort); do
        printf '  --%-18s %s [%s]\n' "$name" "${options_help[$name]}" "${!name-}"
    done
}

die_usage() {
    echo "$(basename "${recipe_script:-$0}"): $1" >&2
    echo >&2
    usage >&2
    exit 2
}

# parse_options "$@": set every declared option; anything else is an error (exit 2).
# cli_args keeps the arguments, quoted (RESULTS.md's command line).
parse_options() {
    local key value
    cli_args=""
    if [ $# -gt 0 ]; then cli_args="$(printf ' %q' "$@")"; fi
    while [ $# -gt 0 ]; do
        case "$1" in
            -h|--help) usage; exit 0 ;;
            --*=*) key="${1%%=*}"; value="${1#*=}"; shift ;;
            --*)
                key="$1"
                [ $# -ge 2 ] || die_usage "option $1 needs a value"
                value="$2"; shift 2 ;;
            *) die_usage "unexpected argument '$1' (options are --key value)" ;;
        esac
        key="${key#--}"; key="${key//-/_}"
        [ -n "${options_help[$key]+set}" ] || die_usage "unknown option --$key"
        printf -v "$key" '%s' "$value"
    done
    [[ "$stage" =~ ^[0-9]+$ && "$stop_stage" =~ ^[0-9]+$ ]] || die_usage "--stage and --stop_stage take integers (got '$stage', '$stop_stage')"
    [[ "$force" == true || "$force" == false ]] || die_usage "--force takes true or false (got '$force')"
    [[ "$overwrite" == true || "$overwrite" == false ]] || die_usage "--overwrite takes true or false (got '$overwrite')"
    overwrite_arg=""; [ "$overwrite" = true ] && overwrite_arg="--overwrite"
    [ "$stage" -le "$stop_stage" ] || die_usage "--stage $stage is after --stop_stage $stop_stage: nothing would run"
    if [ -n "${options_help[guide]+set}" ] && [ -n "${guide:-}" ]; then
        check_guide "$guide" "--guide"
    fi
}

# The guiding strategies of speechbrain_cald.distill.guides.GUIDES.
known_guides="unguided target trajectory waypoint hybrid"

# check_guide NAME WHERE: usage error unless NAME is a known guide.
check_guide() {
    [[ " $known_guides " == *" $1 "* ]] || die_usage "$2: unknown guide '$1' (expected one of: $known_guides)"
}

# corpus_options [NAME=VALUE...]: declare the options every corpus recipe shares
# (RECIPES.md): stages 0-4, the recipe's defaults given as NAME=VALUE (students=...) or
# set before the call.
corpus_options() {
    local pair
    stop_stage=4
    for pair in "$@"; do printf -v "${pair%%=*}" '%s' "${pair#*=}"; done
    : "${data_folder:=}" "${pretrained_dir:=}" "${exp:=$recipe_dir/results}"
    : "${guide:=}" "${students:=}" "${teacher_args:=}" "${student_args:=}"
    options_help[data_folder]="the corpus root as distributed (required)"
    options_help[pretrained_dir]="local folder of the pretrained checkpoint (required; saved with save_pretrained)"
    options_help[exp]="experiment folder: data/, teacher/, <yaml>_<guide>/, RESULTS.md"
    results_md_option
    options_help[guide]="guide for students without a pinned one (default: the YAML's): ${known_guides// /|}"
    options_help[students]="students of stages 3-4: yaml names, name:guide pins a guide"
    options_help[teacher_args]="extra hparams overrides for the teacher, e.g. '--number_of_epochs=2'"
    options_help[student_args]="extra hparams overrides for every student"
}

# results_md_option: declare --results_md (default_results_md gives it its default after parse_options).
results_md_option() {
    : "${results_md:=}"
    options_help[results_md]="where stage 4 writes the results table (default: <exp>/RESULTS.md${published_results_md:+; with the default --exp: $published_results_md})"
}

# require_options NAME...: usage error naming every one of these options left empty.
require_options() {
    local name missing=()
    for name in "$@"; do [ -n "${!name:-}" ] || missing+=("--$name"); done
    [ ${#missing[@]} -eq 0 ] || die_usage "missing ${missing[*]}: pass $(printf '%s ' "${missing[@]/%/ ...}")(see --help)"
}

# student_plan NAME[:GUIDE]: sets plan_name (hparams/NAME.yaml, relative to the current
# folder), plan_guide (the guide pinned, else --guide, else the YAML's own `guide:`) and
# plan_out (the student's folder, $exp/NAME_GUIDE); a usage error (exit 2) for an unknown
# student or guide. It runs in the caller's shell (never in $(...), where the error
# would not stop the recipe) and prints nothing: paths stay whole, spaces and all.
student_plan() {
    local entry="$1" name g
    name="${entry%%:*}"; g=""
    [[ "$entry" == *:* ]] && g="${entry#*:}"
    [ -f "hparams/$name.yaml" ] || die_usage "student '$name': no hparams/$name.yaml"
    [ -n "$g" ] || g="${guide:-}"
    [ -n "$g" ] || g="$(sed -n 's/^guide: *\([A-Za-z_]*\).*/\1/p' "hparams/$name.yaml" | head -1)"
    [ -n "$g" ] && check_guide "$g" "student '$entry'"
    plan_name="$name"; plan_guide="${g:-default}"; plan_out="$exp/${name}_${g:-default}"
}

# check_students [PLAN]: PLAN (default student_plan) of every entry of --students, before
# any stage runs: a usage error stops the recipe before it creates anything.
check_students() {
    local entry
    for entry in $students; do "${1:-student_plan}" "$entry"; done
}

# report_options MODULE EXAMPLE: declare --results_title (keeping the default the recipe
# set) and --eval_args, extra options of stage 4's `python -m MODULE` (e.g. EXAMPLE).
report_options() {
    : "${results_title:=}" "${eval_args:=}"
    options_help[results_title]="the title of RESULTS.md (say 'smoke run' for tiny data)"
    options_help[eval_args]="extra options of $1, e.g. '$2'"
}

# begin_recipe [PATH_OPTION...]: after parse_options, a usage error without --data_folder
# and --pretrained_dir, then recipe_paths PATH_OPTION....
begin_recipe() {
    require_options data_folder pretrained_dir
    recipe_paths "$@"
}

# recipe_paths [PATH_OPTION...]: the stages run from the recipe folder, so --data_folder,
# --pretrained_dir, --exp, --results_md and the recipe's own PATH_OPTIONs given relative
# to the caller's folder are made absolute (absolute_paths; a --pretrained_dir that is no
# folder stops here, with the loader's own hint for a hub id); then results_md gets its
# default (default_results_md), data is <exp>/data (stage 0's manifests), run.sh's logs
# go to <exp> (stage_times.tsv, commands.sh), repo_root and recipe_command (this run's
# command line, for RESULTS.md) are set, it cds to the recipe folder and checks every
# student (check_students). (A recipe that needs neither folder, e.g. an offline
# default, calls this instead of begin_recipe.)
recipe_paths() {
    check_pretrained_dir
    absolute_paths data_folder pretrained_dir exp results_md "$@"
    default_results_md
    data="$exp/data"
    stage_times="$exp/stage_times.tsv"
    stage_commands="$exp/commands.sh"
    repo_root="$(cd "$recipe_dir/../../.." && pwd)"
    recipe_command="bash ${recipe_dir#"$repo_root"/}/run.sh${cli_args:-}"
    cd "$recipe_dir"
    check_students
}

# absolute_paths NAME...: each of these options given relative to the current folder made
# absolute. Every path a recipe passes on is absolute, and train.py takes an absolute path
# as data whatever its characters (speechbrain_cald.overrides: '#', ':', quotes, spaces).
absolute_paths() {
    local name
    for name in "$@"; do
        if [ -n "${!name:-}" ] && [[ "${!name}" != /* ]]; then
            printf -v "$name" '%s' "$PWD/${!name}"
        fi
    done
}

# check_pretrained_dir: a --pretrained_dir that is not a folder stops the recipe before it
# starts, with speechbrain_cald.pretrained.local_source's message for what was typed (a hub
# id such as facebook/wav2vec2-base gets the hint of how to make a local copy, instead of
# becoming <cwd>/facebook/wav2vec2-base and "no such folder" at stage 2).
check_pretrained_dir() {
    [ -n "${pretrained_dir:-}" ] && [ ! -d "$pretrained_dir" ] || return 0
    python - "$pretrained_dir" <<'PY' >&2 || exit 2
import sys
from speechbrain_cald.pretrained import OfflineSourceError, local_source
try:
    local_source(sys.argv[1], "--pretrained_dir")
except OfflineSourceError as err:
    sys.exit(f"{err}")
PY
}

# default_results_md: --results_md when given; else the recipe's published record
# ($published_results_md, set by the mini recipes: RESULTS.md in the source tree) when
# --exp is the recipe's own results folder; else <exp>/RESULTS.md. A run with --exp
# elsewhere writes its results (and plots, beside RESULTS.md) into its experiment, never
# over the tracked files.
default_results_md() {
    [ -z "${results_md:-}" ] || return 0
    if [ -n "${published_results_md:-}" ] && [ "$(realpath -m "$exp")" = "$(realpath -m "$recipe_dir/results")" ]; then
        results_md="$published_results_md"
    else
        results_md="$exp/RESULTS.md"
    fi
}

# teacher_and_student_stages TEACHER_YAML TITLE ARG...: stage 2 (TITLE) trains the teacher,
#   python train.py TEACHER_YAML ARG... --output_folder=$exp/teacher $teacher_args
# and stage 3 each student of --students,
#   python train.py hparams/NAME.yaml ARG... --teacher_folder=$exp/teacher
#       --output_folder=$exp/NAME_GUIDE [--guide=GUIDE] $student_args
# ARG... are the overrides every train.py call gets (--data_folder=... --pretrained_dir=...).
teacher_and_student_stages() {
    local teacher_yaml="$1" title="$2" entry
    shift 2
    if stage 2 "$title" "$exp/teacher/model.ckpt"; then
        # shellcheck disable=SC2086  # *_args are lists of overrides
        run python train.py "$teacher_yaml" "$@" --output_folder="$exp/teacher" $teacher_args $overwrite_arg
        stage_done
    fi
    for entry in $students; do
        student_plan "$entry"
        if stage 3 "CALD student $plan_name, guide $plan_guide" "$plan_out/model.ckpt"; then
            # shellcheck disable=SC2086
            run python train.py "hparams/$plan_name.yaml" "$@" --teacher_folder="$exp/teacher" \
                --output_folder="$plan_out" --guide="$plan_guide" $student_args $overwrite_arg
            stage_done
        fi
    done
}

# student_models [PREFIX]: append LABEL=$exp/NAME_GUIDE to the array `models` (stage 4's
# models, the reference ones set first, e.g. models=("teacher=$exp/teacher")) for each student
# of --students, LABEL being NAME_GUIDE without PREFIX.
student_models() {
    local prefix="${1:-}" entry
    for entry in $students; do
        student_plan "$entry"
        models+=("${plan_name#"$prefix"}_${plan_guide}=$plan_out")
    done
}

# evaluation_stage TITLE OPTIONS [INPUT...]: `stage 4 TITLE $results_md`, run also when a
# model of the array `models` (LABEL=FOLDER: its model.ckpt), an INPUT or the evaluation's
# OPTIONS (a text: sets, LM, --eval_args...) changed since RESULTS.md was written, or when
# this experiment's stage 4 did not write the RESULTS.md there now (another --exp with the
# same --results_md did: skipping would report that run's results as this one's).
# stage_done then records what it wrote ($exp/.stage4_written: the file's checksum).
evaluation_stage() {
    local title="$1" options="$2" m inputs=("$exp/.stage4_options") written="$exp/.stage4_written"
    shift 2
    for m in "${models[@]}"; do [ -e "${m#*=}/model.ckpt" ] && inputs+=("${m#*=}/model.ckpt"); done
    if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
        stamp_file "$exp/.stage4_options" "${models[*]} | $results_md | ${results_title:-} | ${eval_args:-} | $options"
        if [ -e "$results_md" ] && [ "$(cat "$written" 2>/dev/null)" != "$(report_checksum "$results_md")" ]; then
            echo "== stage 4: $results_md was not written by this experiment's stage 4 ($exp): another run's results, to be replaced"
            rm -f "$written"
        fi
    fi
    _stage_report="$results_md"
    stage 4 "$title" "$results_md" "$written" --newer_than "${inputs[@]}" "$@"
}

# report_checksum FILE: what identifies the RESULTS.md a stage 4 wrote.
report_checksum() {
    printf '%s %s\n' "$(cksum < "$1")" "$1"
}

_stage_n=""; _stage_title=""; _stage_outputs=(); _stage_t0=0; _stage_report=""

# stage N TITLE [OUTPUT...] [--newer_than INPUT...]: true (0) when the stage should run now.
stage() {
    local n="$1" title="$2" missing=() newer=() outputs=() inputs=() out in reading=outputs
    shift 2
    for out in "$@"; do
        if [ "$out" = --newer_than ]; then reading=inputs
        elif [ "$reading" = outputs ]; then outputs+=("$out")
        else inputs+=("$out"); fi
    done
    _stage_n="$n"; _stage_title="$title"; _stage_outputs=("${outputs[@]}")
    [ "$n" = 4 ] || _stage_report=""
    if [ "$n" -lt "$stage" ] || [ "$n" -gt "$stop_stage" ]; then
        echo "== stage $n: $title: skipped (outside --stage $stage --stop_stage $stop_stage)"
        return 1
    fi
    for out in "${outputs[@]}"; do [ -e "$out" ] || missing+=("$out"); done
    if [ ${#missing[@]} -eq 0 ]; then
        for in in "${inputs[@]}"; do
            for out in "${outputs[@]}"; do
                if [ ! -e "$in" ] || [ "$in" -nt "$out" ]; then newer+=("$in"); break; fi
            done
        done
    fi
    if [ "$force" != true ] && [ ${#outputs[@]} -gt 0 ] && [ ${#missing[@]} -eq 0 ] && [ ${#newer[@]} -eq 0 ]; then
        echo "== stage $n: $title: skipped, outputs exist${inputs[0]:+ and are newer than its inputs} (--force true to redo): ${outputs[*]}"
        return 1
    fi
    if [ "$force" != true ] && [ ${#newer[@]} -gt 0 ]; then
        echo "== stage $n: $title: running (changed since its outputs were written: ${newer[*]})"
    else
        echo "== stage $n: $title: running"
    fi
    _stage_t0=$(date +%s.%N)
    return 0
}

# stamp_file FILE TEXT: write TEXT to FILE unless it holds it already (its time then says
# when TEXT last changed: an input of `stage ... --newer_than`).
stamp_file() {
    if [ ! -f "$1" ] || [ "$(cat "$1")" != "$2" ]; then
        mkdir -p "$(dirname "$1")"
        printf '%s\n' "$2" > "$1"
    fi
}

# run CMD...: print the command, append it to $stage_commands (if set), run it.
run() {
    echo "+ $*"
    if [ -n "${stage_commands:-}" ]; then
        mkdir -p "$(dirname "$stage_commands")"
        printf '%q ' "$@" >> "$stage_commands"
        echo >> "$stage_commands"
    fi
    "$@"
}

# stage_done: report the time taken and where the outputs went.
stage_done() {
    local t
    t=$(awk -v a="$_stage_t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    echo "== stage $_stage_n: $_stage_title: done in ${t} s${_stage_outputs[*]:+; outputs: ${_stage_outputs[*]}}"
    if [ -n "$stage_times" ]; then
        mkdir -p "$(dirname "$stage_times")"
        printf '%s\t%s\t%s\n' "$_stage_n" "$_stage_title" "$t" >> "$stage_times"
    fi
    if [ -n "$_stage_report" ]; then  # evaluation_stage's RESULTS.md: this experiment wrote it
        [ -e "$_stage_report" ] && report_checksum "$_stage_report" > "$exp/.stage4_written"
        _stage_report=""
    fi
}
