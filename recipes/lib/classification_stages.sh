#!/usr/bin/env bash
# recipes/lib/classification_stages.sh: stages 1-4 of the utterance-classification recipes
# (SLURP/SLU, VoxCeleb1/SpeakerID). Source it after recipes/lib/stages.sh; before
# parse_options, `classification_options` declares --eval_args and --results_title; after
# it, `classification_setup "$@"` sets
#
#   data_folder, pretrained_dir, exp, results_md, split_file   made absolute
#   data               <exp>/data: manifests of stage 0, label encoder of stage 1
#   results_md         <exp>/RESULTS.md unless given
#   cli_args           the recipe's command line, for RESULTS.md
#   stage_times, stage_commands   run.sh's logs in <exp>
#
# The corpus recipe then runs its stage 0, sets
#
#   train_manifests    array: the training manifests (their labels make the label set)
#   common             array: overrides every train.py call gets (--data_folder=... ...)
#
# and calls
#
#   classification_stages TEACHER_YAML "TITLE" split=manifest.csv ...
#
# with the evaluation splits. Stage 1 writes $data/label_encoder.txt, stage 2 the teacher
# ($exp/teacher), stage 3 each student of $students ($exp/<yaml>_<guide>), stage 4
# RESULTS.md at $results_md through speechbrain_cald.evaluation.classification.

classification_options() {
    : "${eval_args:=}" "${results_title:=}"
    options_help[eval_args]="extra options of the evaluation, e.g. '--bench_seconds 10 30'"
    options_help[results_title]="title of RESULTS.md (default: the recipe's; say so when the data is tiny)"
}

classification_setup() {
    local v
    # the stages run from the recipe folder: paths given relative to here are made absolute
    for v in data_folder pretrained_dir exp results_md split_file; do
        if [ -n "${!v:-}" ] && [[ "${!v}" != /* ]]; then
            printf -v "$v" '%s' "$PWD/${!v}"
        fi
    done
    results_md="${results_md:-$exp/RESULTS.md}"
    cli_args=""
    if [ $# -gt 0 ]; then cli_args="$(printf ' %q' "$@")"; fi
    data="$exp/data"
    stage_times="$exp/stage_times.tsv"
    stage_commands="$exp/commands.sh"
}

classification_stages() {
    local teacher_yaml="$1" title="${results_title:-$2}" entry plan name g out
    shift 2
    local eval_sets=("$@") models=("teacher=$exp/teacher")

    if stage 1 "Label encoder (the training split's labels)" "$data/label_encoder.txt"; then
        run python -m speechbrain_cald.data.labels "$data/label_encoder.txt" "${train_manifests[@]}"
        stage_done
    fi

    if stage 2 "Fine-tune the wav2vec2-family teacher (with waypoint snapshots)" "$exp/teacher/model.ckpt"; then
        # shellcheck disable=SC2086  # *_args are lists of overrides
        run python train.py "$teacher_yaml" "${common[@]}" --output_folder="$exp/teacher" $teacher_args
        stage_done
    fi

    for entry in $students; do
        plan="$(student_plan "$entry")"; read -r name g out <<< "$plan"
        models+=("${name}_${g}=$out")
        if stage 3 "CALD student $name, guide $g" "$out/model.ckpt"; then
            # shellcheck disable=SC2086
            run python train.py "hparams/$name.yaml" "${common[@]}" --teacher_folder="$exp/teacher" \
                --output_folder="$out" ${g:+--guide=$g} $student_args
            stage_done
        fi
    done

    if stage 4 "Evaluate: accuracy and macro-F1 per split, confusions, speed and memory vs length"; then
        local repo_root
        repo_root="$(cd "$recipe_dir/../../.." && pwd)"
        # shellcheck disable=SC2086
        run python -m speechbrain_cald.evaluation.classification --exp "$exp" --data_root "$data_folder" \
            --sets "${eval_sets[@]}" --models "${models[@]}" --results_md "$results_md" --title "$title" \
            --stage_times "$stage_times" --command "bash ${recipe_dir#"$repo_root"/}/run.sh$cli_args" \
            --repo_root "$repo_root" $eval_args
        stage_done
    fi
}
