#!/usr/bin/env bash
# The mini ASR recipe: espeak-ng corpus -> character units -> conformer CTC teacher
# -> CALD students (BiMamba2, Linformer, parameter-sharing) -> WER (greedy and
# lexicon + word 3-gram), long-form and speed evaluation.
# Runs from any directory; outputs go to data/ and results/ beside this file.
#
#   bash recipes/mini/ASR/run.sh                         # stages 0-4
#   bash recipes/mini/ASR/run.sh --stage 3 --guide waypoint
#   bash recipes/mini/ASR/run.sh --help
recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipe_script="${BASH_SOURCE[0]}"
recipe_description="Mini ASR: espeak-ng corpus, conformer CTC teacher, CALD students, evaluation.
Stages: 0 corpus, 1 units + word LM, 2 teacher, 3 students, 4 evaluation."
source "$recipe_dir/../../lib/stages.sh"

# Students of stage 3/4: hparams/<name>.yaml, optionally <name>:<guide> to pin a guide.
STUDENTS="mini_mamba mini_mamba:unguided mini_linformer mini_residual mini_recursive"

stage=0; stop_stage=4
data="$recipe_dir/data";          options_help[data]="corpus folder (stage 0 writes, later stages read)"
exp="$recipe_dir/results";        options_help[exp]="experiment folder (models, logs, RESULTS inputs)"
n_train=4000;                     options_help[n_train]="training utterances"
n_valid=150;                      options_help[n_valid]="validation utterances (unseen voices)"
n_test=300;                       options_help[n_test]="test utterances (unseen voices)"
longform="30 60 120";             options_help[longform]="long-form recording lengths in seconds"
students="$STUDENTS";             options_help[students]="students to train/evaluate: yaml names, name:guide pins a guide"
guide="";                         options_help[guide]="guide for students without a pinned one (default: the YAML's): unguided|target|trajectory|waypoint|hybrid"
teacher_args="";                  options_help[teacher_args]="extra hparams overrides for the teacher, e.g. '--number_of_epochs=2'"
student_args="";                  options_help[student_args]="extra hparams overrides for every student"
eval_args="";                     options_help[eval_args]="extra options for evaluate.py, e.g. '--bench_seconds 10 30'"
results_md="$recipe_dir/RESULTS.md"; options_help[results_md]="where stage 4 writes the results table"
parse_options "$@"
cli_args=""
if [ $# -gt 0 ]; then cli_args="$(printf ' %q' "$@")"; fi

stage_times="$exp/stage_times.tsv"
stage_commands="$exp/commands.sh"
cd "$recipe_dir"

if stage 0 "Synthesise the espeak-ng corpus (+ long-form, + LibriVox if installed)" "$data/corpus.json"; then
    run python prepare.py --data_folder "$data" --n_train "$n_train" --n_valid "$n_valid" --n_test "$n_test" --longform $longform
    stage_done
fi

if stage 1 "Character units and a word 3-gram LM of the training transcripts" "$data/units.txt" "$data/lm_3gram.arpa"; then
    run python -m speechbrain_cald.data.units "$data/units.txt" "$data/train.csv"
    run python -m speechbrain_cald.decoders.ngram "$data/lm_3gram.arpa" "$data/train.csv" --order 3
    stage_done
fi

if stage 2 "Train the conformer CTC teacher (with waypoint snapshots)" "$exp/teacher/model.ckpt"; then
    # shellcheck disable=SC2086  # *_args are lists of overrides
    run python train.py hparams/mini_teacher.yaml --data_folder="$data" --output_folder="$exp/teacher" $teacher_args
    stage_done
fi

for entry in $students; do
    plan="$(student_plan "$entry")"; read -r name g out <<< "$plan"
    if stage 3 "CALD student $name, guide $g" "$out/model.ckpt"; then
        # shellcheck disable=SC2086
        run python train.py "hparams/$name.yaml" --data_folder="$data" --teacher_folder="$exp/teacher" \
            --output_folder="$out" ${g:+--guide=$g} $student_args
        stage_done
    fi
done

models=("teacher=$exp/teacher")
eval_inputs=("$exp/teacher/model.ckpt")
for entry in $students; do
    plan="$(student_plan "$entry")"; read -r name g out <<< "$plan"
    models+=("${name#mini_}_${g}=$out")
    eval_inputs+=("$out/model.ckpt")
done
# stage 4 reruns when a model, the data, the decoder or the evaluation's options changed
[ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ] && stamp_file "$exp/.stage4_options" "${models[*]} | $data | $eval_args"
eval_inputs+=("$exp/.stage4_options" "$data/units.txt" "$data/lm_3gram.arpa" "$data/test.csv" evaluate.py hparams/decode.yaml)
if stage 4 "Evaluate: WER (short, long-form, LibriVox), speed and memory vs length" "$results_md" \
        --newer_than "${eval_inputs[@]}"; then
    # shellcheck disable=SC2086
    run python evaluate.py --data_folder "$data" --exp_folder "$exp" --models "${models[@]}" \
        --results_md "$results_md" --stage_times "$stage_times" \
        --command "bash recipes/mini/ASR/run.sh$cli_args" $eval_args
    stage_done
fi
