#!/usr/bin/env bash
# recipes/lib/asr_stages.sh: stages 1-4 of the CTC ASR corpus recipes (LibriSpeech, TED-LIUM).
#
# A corpus recipe's run.sh sets its options (corpus_options + its own), runs its stage 0
# (manifests into $exp/data), then sources this file, which runs:
#   1  tokens (train.py --prepare_only=True) and the word n-gram for LM decoding
#   2  the teacher (hparams/${corpus}_teacher.yaml)            -> $exp/teacher
#   3  every student of --students                             -> $exp/<yaml>_<guide>
#   4  speechbrain_cald.evaluation.asr: EncoderASR export, WER, long recordings, speed, RESULTS.md
# What the recipe sets before sourcing: corpus (YAML prefix), results_title, split_overrides
# (an array of --key=value passed to every train.py), test_sets (name=csv ...), longform_sets,
# lm_text (a text corpus for the LM, may be empty), lm_lower (true: lower-case it).

prep="$exp/data"
common=(--data_folder="$data_folder" --pretrained_dir="$pretrained_dir" "${split_overrides[@]}")
lm_built="$prep/lm/word_3gram.arpa"

if stage 1 "Tokens (${token_type:-char}) and the word 3-gram" "$prep/tokens/tokens.json" "${lm:-$lm_built}"; then
    # shellcheck disable=SC2086  # *_args are lists of overrides
    run python train.py "hparams/${corpus}_teacher.yaml" "${common[@]}" --output_folder="$exp/teacher" \
        --prepare_only=True $teacher_args
    if [ -z "${lm:-}" ]; then
        if [ -n "${lm_text:-}" ] && [ -f "$lm_text" ]; then
            run python -m speechbrain_cald.decoders.word_lm "$lm_built" --text "$lm_text" --order 3 \
                ${lm_lower:+--lower}
        else
            run python -m speechbrain_cald.decoders.word_lm "$lm_built" --manifests "$prep/train.csv" --order 3
        fi
    fi
    stage_done
fi

if stage 2 "Fine-tune the teacher (with waypoint snapshots)" "$exp/teacher/model.ckpt"; then
    # shellcheck disable=SC2086
    run python train.py "hparams/${corpus}_teacher.yaml" "${common[@]}" --output_folder="$exp/teacher" $teacher_args
    stage_done
fi

for entry in $students; do
    plan="$(student_plan "$entry")"; read -r name g out <<< "$plan"
    if stage 3 "CALD student $name, guide $g" "$out/model.ckpt"; then
        # shellcheck disable=SC2086
        run python train.py "hparams/$name.yaml" "${common[@]}" --teacher_folder="$exp/teacher" \
            --output_folder="$out" ${g:+--guide=$g} $student_args
        stage_done
    fi
done

if stage 4 "Evaluate: export, WER per split (greedy, LM), long recordings, speed vs length"; then
    models=("teacher=$exp/teacher")
    for entry in $students; do
        plan="$(student_plan "$entry")"; read -r name g out <<< "$plan"
        models+=("${name#"${corpus}"_}_${g}=$out")
    done
    # shellcheck disable=SC2086
    run python -m speechbrain_cald.evaluation.asr --exp "$exp" --models "${models[@]}" --data_root "$data_folder" \
        --tokens "$prep/tokens" --sets "${test_sets[@]}" --longform "${longform_sets[@]}" \
        --lm "${lm:-$lm_built}" --results_md "${results_md:-$exp/RESULTS.md}" --title "$results_title" \
        --stage_times "$stage_times" --repo_root "$recipe_dir/../../.." \
        --command "bash recipes/${recipe_dir#*/recipes/}/run.sh$cli_args" $eval_args
    stage_done
fi
