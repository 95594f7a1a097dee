#!/usr/bin/env bash
# recipes/lib/text_classification.sh: stages 0-4 of every text-classification recipe
# (GLUE, IMDB, mini/Text). A recipe's run.sh sources this file (which sources
# recipes/lib/stages.sh), declares its options with `corpus_options` and
# `text_classification_options`, calls `parse_options`, then `begin_recipe` (or
# `recipe_paths` when it needs no corpus or model folder), sets
#
#   yaml_prefix=glue          # hparams/<prefix>_teacher.yaml is the teacher; its `prepare` is stage 0
#   train_args=(--data_folder=... --pretrained_dir=... [--task=...])   # every train.py call
#   eval_options=(--full_length ...)   # evaluator options of the recipe (stage 4)
#
# and calls `text_classification_stages`.
#
# Stages: 0 manifests ($exp/data/<split>.csv + corpus.json); 1 nothing to build (the tokenizer
# comes with the pretrained model, the label set with the corpus); 2 the fine-tuned
# teacher ($exp/teacher); 3 each student ($exp/<yaml>_<guide>); 4 evaluation (RESULTS.md).

source "$(dirname "${BASH_SOURCE[0]}")/stages.sh"

text_classification_options() {
    report_options speechbrain_cald.evaluation.text "${1:---bench_lengths 128 512}"
}

text_classification_stages() {
    if stage 0 "Prepare the corpus: one manifest per split" "$data/corpus.json"; then
        # the teacher YAML's own `prepare`: the manifests train.py would write, with the same options
        # shellcheck disable=SC2086
        run python -m speechbrain_cald.tasks.text_classification prepare "hparams/${yaml_prefix}_teacher.yaml" \
            "${train_args[@]}" --output_folder="$exp/teacher" $teacher_args
        stage_done
    fi

    if stage 1 "Tokens and labels" ; then
        echo "   nothing to build: the tokenizer comes with the pretrained model, the labels are in $data/corpus.json"
        stage_done
    fi

    teacher_and_student_stages "hparams/${yaml_prefix}_teacher.yaml" \
        "Fine-tune the transformer teacher (with waypoint snapshots)" "${train_args[@]}"

    models=("teacher=$exp/teacher")
    student_models "${yaml_prefix}_"
    if evaluation_stage "Evaluate teacher and students: metrics, truncation, speed and memory vs length" \
            "${eval_options[*]}" "$data/corpus.json"; then
        # shellcheck disable=SC2086
        run python -m speechbrain_cald.evaluation.text --manifest_folder "$data" --models "${models[@]}" \
            --results_md "$results_md" --stage_times "$stage_times" --exp_folder "$exp" --title "$results_title" \
            --command "$recipe_command" "${eval_options[@]}" $eval_args
        stage_done
    fi
}
