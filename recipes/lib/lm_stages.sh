#!/usr/bin/env bash
# recipes/lib/lm_stages.sh: stages 2-4 of the language-model recipes (Pile/LM, mini/LM).
#
# A recipe's run.sh sets its options, runs its stages 0-1 (manifests and token shards into
# $exp/data), then sources this file, which runs:
#   2  the teacher (hparams/${corpus}_teacher.yaml)                       -> $exp/teacher
#   3  every student of --students                                        -> $exp/<yaml>_<guide>
#   4  speechbrain_cald.evaluation.lm: perplexity (twice), zero-shot tasks, generation
#      speed and memory vs prompt length                                  -> RESULTS.md
# What the recipe sets before sourcing: corpus (YAML prefix), common (an array of --key=value
# passed to every train.py), reference_models (name=folder evaluated first, may be empty; the
# teacher follows when stage 2 exported one, then the students), results_title, report_args
# (an array of extra speechbrain_cald.evaluation.lm options), teacher_title (stage 2's title).

block_size="$(sed -n 's/^block_size: *\([0-9]*\).*/\1/p' "hparams/${corpus}_mamba.yaml" | head -1)"

teacher_and_student_stages "hparams/${corpus}_teacher.yaml" "$teacher_title" "${common[@]}"

models=("${reference_models[@]}")
[ -d "$exp/teacher/inference" ] && models+=("teacher=$exp/teacher")
student_models "${corpus}_"
if evaluation_stage "Evaluate: perplexity, zero-shot tasks, generation speed and memory vs prompt length" \
        "$block_size | ${report_args[*]}"; then
    # shellcheck disable=SC2086
    run python -m speechbrain_cald.evaluation.lm --data_folder "$exp/data" --exp_folder "$exp" \
        --models "${models[@]}" --results_md "${results_md:-$exp/RESULTS.md}" --title "$results_title" \
        --block_size "$block_size" "${report_args[@]}" --stage_times "$stage_times" \
        --command "./run.sh --recipe ${recipe_dir#*/recipes/}$cli_args" $eval_args
    stage_done
fi
