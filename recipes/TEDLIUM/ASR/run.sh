#!/usr/bin/env bash
# TED-LIUM ASR (release 3's legacy split, or release 2): a local wav2vec2-family checkpoint
# fine-tuned with CTC (teacher), converted to linear-time CALD students (BiMamba2, Linformer)
# with layer and logits distillation; stage 4 also decodes every test talk whole, in one pass.
#
#   bash recipes/TEDLIUM/ASR/run.sh --data_folder /data/TEDLIUM_release-3 --pretrained_dir /models/wav2vec2-large-lv60
recipe_description="TED-LIUM ASR: wav2vec2-family teacher (CTC), CALD students, evaluation (segments and whole talks).
Stages: 0 manifests, 1 tokens + word LM, 2 teacher, 3 students, 4 evaluation (RESULTS.md)."
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/asr_stages.sh"

lm_text="";                       options_help[lm_text]="a text corpus (one sentence per line) to build the word 3-gram from instead, e.g. TED-LIUM 3's LM data"
teacher_longform_max_s="";        options_help[teacher_longform_max_s]="skip whole-talk decoding by the teacher for talks longer than this (attention memory); empty: decode all"
corpus_options students="tedlium_mamba tedlium_linformer" results_title="TED-LIUM ASR"
asr_options
parse_options "$@"
begin_recipe lm lm_text
split_overrides=(--token_type="$token_type")

if stage 0 "Segment and whole-talk manifests of train / dev / test" "$data/train.csv" "$data/dev.csv" "$data/test.csv"; then
    run python tedlium_prepare.py "$data_folder" "$data" --splits train dev test
    stage_done
fi

corpus=tedlium
test_sets=("dev=$data/dev.csv" "test=$data/test.csv")
longform_sets=("test_talks=$data/test_talks.csv")
[ -n "$teacher_longform_max_s" ] && eval_args="--longform_max_s teacher=$teacher_longform_max_s $eval_args"
lm_lower=true
asr_stages
