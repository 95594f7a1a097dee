#!/usr/bin/env bash
# recipes/lib/classification_stages.sh: stages 1-4 of the utterance-classification recipes
# (SLURP/SLU, VoxCeleb1/SpeakerID). A recipe's run.sh sources this file, which sources
# recipes/lib/stages.sh. Before parse_options, `classification_options` declares
# --eval_args and --results_title; after begin_recipe and its stage 0 (manifests into
# $data), the recipe sets
#
#   train_manifests    array: the training manifests (their labels make the label set)
#   common             array: overrides every train.py call gets (--data_folder=... ...)
#
# and calls
#
#   classification_stages TEACHER_YAML split=manifest.csv ...
#
# with the evaluation splits. Stage 1 writes $data/label_encoder.txt, stage 2 the teacher
# ($exp/teacher), stage 3 each student of $students ($exp/<yaml>_<guide>), stage 4
# RESULTS.md at $results_md through speechbrain_cald.evaluation.classification.

source "$(dirname "${BASH_SOURCE[0]}")/stages.sh"

classification_options() {
    report_options speechbrain_cald.evaluation.classification "--bench_seconds 10 30"
}

classification_stages() {
    local teacher_yaml="$1"
    shift
    local eval_sets=("$@")

    if stage 1 "Label encoder (the training split's labels)" "$data/label_encoder.txt"; then
        run python -m speechbrain_cald.data.labels "$data/label_encoder.txt" "${train_manifests[@]}"
        stage_done
    fi

    teacher_and_student_stages "$teacher_yaml" "Fine-tune the wav2vec2-family teacher (with waypoint snapshots)" \
        "${common[@]}"

    models=("teacher=$exp/teacher")
    student_models
    if evaluation_stage "Evaluate: accuracy and macro-F1 per split, confusions, speed and memory vs length" \
            "${eval_sets[*]}" "$data/label_encoder.txt"; then
        # shellcheck disable=SC2086
        run python -m speechbrain_cald.evaluation.classification --exp "$exp" --data_root "$data_folder" \
            --sets "${eval_sets[@]}" --models "${models[@]}" --results_md "$results_md" --title "$results_title" \
            --stage_times "$stage_times" --command "$recipe_command" --repo_root "$repo_root" $eval_args
        stage_done
    fi
}
