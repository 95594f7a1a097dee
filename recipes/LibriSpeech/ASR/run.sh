#!/usr/bin/env bash
# LibriSpeech ASR: a local wav2vec2-family checkpoint fine-tuned with CTC (teacher), then
# converted to linear-time CALD students (BiMamba2, Linformer), evaluated with and without
# a word n-gram. Runs from any directory.
#
#   bash recipes/LibriSpeech/ASR/run.sh --data_folder /data/LibriSpeech --pretrained_dir /models/wav2vec2-base
#   ./run.sh --recipe LibriSpeech/ASR --data_folder ... --pretrained_dir ... --stage 3 --guide waypoint
recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipe_script="${BASH_SOURCE[0]}"
recipe_description="LibriSpeech ASR: wav2vec2-family teacher (CTC), CALD students, evaluation.
Stages: 0 manifests, 1 tokens + word LM, 2 teacher, 3 students, 4 evaluation (RESULTS.md)."
source "$recipe_dir/../../lib/stages.sh"

stage=0; stop_stage=4
students="librispeech_mamba librispeech_linformer"
corpus_options
train_splits="train-clean-100";   options_help[train_splits]="training splits (space-separated), e.g. 'train-clean-100 train-clean-360 train-other-500'"
dev_splits="dev-clean";           options_help[dev_splits]="validation splits"
test_splits="test-clean test-other"; options_help[test_splits]="test splits (stage 4 reports a WER for each)"
lm="";                            options_help[lm]="word n-gram for stage 4 (ARPA or KenLM binary); default: built in stage 1 from <data_folder>/librispeech-lm-norm.txt if there, else the training transcripts"
token_type="char";                options_help[token_type]="char | unigram (then also --teacher_args/--student_args '--output_neurons=N --vocab_size=N')"
results_title="LibriSpeech ASR"; options_help[results_title]="the title of RESULTS.md (say 'smoke run' for tiny data)"
eval_args="";                     options_help[eval_args]="extra options of speechbrain_cald.evaluation.asr, e.g. '--lm_decoder cald --alpha 0.8'"
parse_options "$@"
require_options data_folder pretrained_dir
cli_args=""
if [ $# -gt 0 ]; then cli_args="$(printf ' %q' "$@")"; fi

stage_times="$exp/stage_times.tsv"
stage_commands="$exp/commands.sh"
cd "$recipe_dir"
yaml_list() { local IFS=,; echo "[$*]"; }
# shellcheck disable=SC2086
split_overrides=(--train_splits="$(yaml_list $train_splits)" --dev_splits="$(yaml_list $dev_splits)"
                 --test_splits="$(yaml_list $test_splits)" --token_type="$token_type")

if stage 0 "Manifests of $train_splits / $dev_splits / $test_splits" "$exp/data/train.csv" "$exp/data/valid.csv"; then
    # shellcheck disable=SC2086
    run python librispeech_prepare.py "$data_folder" "$exp/data" --train_splits $train_splits \
        --dev_splits $dev_splits --test_splits $test_splits
    stage_done
fi

corpus=librispeech
test_sets=()
for s in $test_splits; do test_sets+=("$s=$exp/data/$s.csv"); done
longform_sets=()
lm_text="$data_folder/librispeech-lm-norm.txt"
lm_lower=""
source "$recipe_dir/../../lib/asr_stages.sh"
