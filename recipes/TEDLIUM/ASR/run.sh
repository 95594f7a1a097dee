#!/usr/bin/env bash
# TED-LIUM ASR (release 3's legacy split, or release 2): a local wav2vec2-family checkpoint
# fine-tuned with CTC (teacher), converted to linear-time CALD students (BiMamba2, Linformer)
# with layer and logits distillation; stage 4 also decodes every test talk whole, in one pass.
#
#   bash recipes/TEDLIUM/ASR/run.sh --data_folder /data/TEDLIUM_release-3 --pretrained_dir /models/wav2vec2-large-lv60
recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipe_script="${BASH_SOURCE[0]}"
recipe_description="TED-LIUM ASR: wav2vec2-family teacher (CTC), CALD students, evaluation (segments and whole talks).
Stages: 0 manifests, 1 tokens + word LM, 2 teacher, 3 students, 4 evaluation (RESULTS.md)."
source "$recipe_dir/../../lib/stages.sh"

stage=0; stop_stage=4
students="tedlium_mamba tedlium_linformer"
corpus_options
lm="";                            options_help[lm]="word n-gram for stage 4 (ARPA or KenLM binary); default: built in stage 1 from the training transcripts"
lm_text="";                       options_help[lm_text]="a text corpus (one sentence per line) to build the word 3-gram from instead, e.g. TED-LIUM 3's LM data"
token_type="char";                options_help[token_type]="char | unigram (then also --teacher_args/--student_args '--output_neurons=N --vocab_size=N')"
teacher_longform_max_s="";        options_help[teacher_longform_max_s]="skip whole-talk decoding by the teacher for talks longer than this (attention memory); empty: decode all"
results_title="TED-LIUM ASR"; options_help[results_title]="the title of RESULTS.md (say 'smoke run' for tiny data)"
eval_args="";                     options_help[eval_args]="extra options of speechbrain_cald.evaluation.asr, e.g. '--lm_decoder cald --alpha 0.8'"
parse_options "$@"
require_options data_folder pretrained_dir
cli_args=""
if [ $# -gt 0 ]; then cli_args="$(printf ' %q' "$@")"; fi

stage_times="$exp/stage_times.tsv"
stage_commands="$exp/commands.sh"
cd "$recipe_dir"
split_overrides=(--token_type="$token_type")

if stage 0 "Segment and whole-talk manifests of train / dev / test" "$exp/data/train.csv" "$exp/data/dev.csv" "$exp/data/test.csv"; then
    run python tedlium_prepare.py "$data_folder" "$exp/data" --splits train dev test
    stage_done
fi

corpus=tedlium
test_sets=("dev=$exp/data/dev.csv" "test=$exp/data/test.csv")
longform_sets=("test_talks=$exp/data/test_talks.csv")
[ -n "$teacher_longform_max_s" ] && eval_args="--longform_max_s teacher=$teacher_longform_max_s $eval_args"
lm_lower=true
source "$recipe_dir/../../lib/asr_stages.sh"
