#!/usr/bin/env bash
# recipes/lib/asr_stages.sh: stages 1-4 of the CTC ASR corpus recipes (LibriSpeech, TED-LIUM).
# A recipe's run.sh sources this file, which sources recipes/lib/stages.sh. Before
# parse_options, `asr_options` declares the options every ASR recipe has (--lm
# --token_type --results_title --eval_args); after begin_recipe and its stage 0
# (manifests into $data), the recipe sets
#
#   corpus            the YAML prefix (hparams/${corpus}_teacher.yaml)
#   split_overrides   array: --key=value passed to every train.py (splits, token type)
#   test_sets         array: name=csv of the test splits
#   longform_sets     array: name=csv of whole recordings decoded in one pass (may be empty)
#   lm_text           a text corpus for the word 3-gram (may be empty: the training transcripts)
#   lm_lower          true: lower-case lm_text (may be empty)
#
# and calls `asr_stages`, which runs
#   1  tokens (train.py --prepare_only=True) and the word n-gram for LM decoding
#   2  the teacher (hparams/${corpus}_teacher.yaml)            -> $exp/teacher
#   3  every student of --students                             -> $exp/<yaml>_<guide>
#   4  speechbrain_cald.evaluation.asr: EncoderASR export, WER, long recordings, speed, RESULTS.md

source "$(dirname "${BASH_SOURCE[0]}")/stages.sh"

asr_options() {
    : "${lm:=}" "${token_type:=char}"
    options_help[lm]="word n-gram for stage 4 (ARPA or KenLM binary); default: built in stage 1 from the training transcripts"
    options_help[token_type]="char | unigram (then also --teacher_args/--student_args '--output_neurons=N --vocab_size=N')"
    report_options speechbrain_cald.evaluation.asr "--lm_decoder cald --alpha 0.8"
}

asr_stages() {
    local common=(--data_folder="$data_folder" --pretrained_dir="$pretrained_dir" "${split_overrides[@]}")
    local lm_built="$data/lm/word_3gram.arpa"

    if stage 1 "Tokens (${token_type:-char}) and the word 3-gram" "$data/tokens/tokens.json" "${lm:-$lm_built}"; then
        # shellcheck disable=SC2086  # *_args are lists of overrides
        run python train.py "hparams/${corpus}_teacher.yaml" "${common[@]}" --output_folder="$exp/teacher" \
            --prepare_only=True $teacher_args
        if [ -z "${lm:-}" ]; then
            if [ -n "${lm_text:-}" ] && [ -f "$lm_text" ]; then
                run python -m speechbrain_cald.decoders.word_lm "$lm_built" --text "$lm_text" --order 3 \
                    ${lm_lower:+--lower}
            else
                run python -m speechbrain_cald.decoders.word_lm "$lm_built" --manifests "$data/train.csv" --order 3
            fi
        fi
        stage_done
    fi

    teacher_and_student_stages "hparams/${corpus}_teacher.yaml" "Fine-tune the teacher (with waypoint snapshots)" \
        "${common[@]}"

    models=("teacher=$exp/teacher")
    student_models "${corpus}_"
    if evaluation_stage "Evaluate: export, WER per split (greedy, LM), long recordings, speed vs length" \
            "${test_sets[*]} | ${longform_sets[*]} | ${lm:-$lm_built}" "${lm:-$lm_built}" "$data/tokens/tokens.json"; then
        # shellcheck disable=SC2086
        run python -m speechbrain_cald.evaluation.asr --exp "$exp" --models "${models[@]}" --data_root "$data_folder" \
            --tokens "$data/tokens" --sets "${test_sets[@]}" --longform "${longform_sets[@]}" \
            --lm "${lm:-$lm_built}" --results_md "$results_md" --title "$results_title" \
            --stage_times "$stage_times" --repo_root "$repo_root" --command "$recipe_command" $eval_args
        stage_done
    fi
}
