#!/usr/bin/env bash
# recipes/lib/text_classification.sh: stages 0-4 of every text-classification recipe
# (GLUE, IMDB, mini/Text), sourced after recipes/lib/stages.sh.
#
# The recipe's run.sh sets, then calls `text_classification_stages`:
#   yaml_prefix=glue                 # hparams/<prefix>_teacher.yaml is the teacher; its `prepare` is stage 0
#   train_args=(--data_folder=... --pretrained_dir=... [--task=...])   # every train.py call
#   eval_options=(--full_length ...) # evaluator options of the recipe (stage 4)
#   title="GLUE SST-2"               # RESULTS.md title
# and the shared options: exp, results_md, students, guide, teacher_args, student_args, eval_args.
#
# Stages: 0 manifests ($exp/data/<split>.csv + corpus.json); 1 nothing to build (the tokenizer
# comes with the pretrained model, the label set with the corpus); 2 the fine-tuned
# teacher ($exp/teacher); 3 each student ($exp/<yaml>_<guide>); 4 evaluation (RESULTS.md).

text_classification_stages() {
    local cli_args="" plan name g out entry models
    stage_times="$exp/stage_times.tsv"
    stage_commands="$exp/commands.sh"
    results_md="${results_md:-$exp/RESULTS.md}"
    if [ ${#recipe_argv[@]} -gt 0 ]; then cli_args="$(printf ' %q' "${recipe_argv[@]}")"; fi
    cd "$recipe_dir"

    if stage 0 "Prepare the corpus: one manifest per split" "$exp/data/corpus.json"; then
        # the teacher YAML's own `prepare`: the manifests train.py would write, with the same options
        # shellcheck disable=SC2086
        run python -m speechbrain_cald.tasks.text_classification prepare "hparams/${yaml_prefix}_teacher.yaml" \
            "${train_args[@]}" --output_folder="$exp/teacher" $teacher_args
        stage_done
    fi

    if stage 1 "Tokens and labels" ; then
        echo "   nothing to build: the tokenizer comes with the pretrained model, the labels are in $exp/data/corpus.json"
        stage_done
    fi

    if stage 2 "Fine-tune the transformer teacher (with waypoint snapshots)" "$exp/teacher/model.ckpt"; then
        # shellcheck disable=SC2086  # *_args are lists of overrides
        run python train.py "hparams/${yaml_prefix}_teacher.yaml" "${train_args[@]}" \
            --output_folder="$exp/teacher" $teacher_args
        stage_done
    fi

    for entry in $students; do
        plan="$(student_plan "$entry")"; read -r name g out <<< "$plan"
        if stage 3 "CALD student $name, guide $g" "$out/model.ckpt"; then
            # shellcheck disable=SC2086
            run python train.py "hparams/$name.yaml" "${train_args[@]}" --teacher_folder="$exp/teacher" \
                --output_folder="$out" ${g:+--guide=$g} $student_args
            stage_done
        fi
    done

    if stage 4 "Evaluate teacher and students: metrics, truncation, speed and memory vs length"; then
        models=("teacher=$exp/teacher")
        for entry in $students; do
            plan="$(student_plan "$entry")"; read -r name g out <<< "$plan"
            models+=("${name#"${yaml_prefix}"_}_${g}=$out")
        done
        # shellcheck disable=SC2086
        run python -m speechbrain_cald.evaluation.text --manifest_folder "$exp/data" --models "${models[@]}" \
            --results_md "$results_md" --stage_times "$stage_times" --exp_folder "$exp" --title "$title" \
            --command "./run.sh --recipe ${recipe_name}${cli_args}" "${eval_options[@]}" $eval_args
        stage_done
    fi
}
