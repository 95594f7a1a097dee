#!/usr/bin/env bash
# LibriSpeech ASR: a local wav2vec2-family checkpoint fine-tuned with CTC (teacher), then
# converted to linear-time CALD students (BiMamba2, Linformer), evaluated with and without
# a word n-gram. Runs from any directory.
#
#   bash recipes/LibriSpeech/ASR/run.sh --data_folder /data/LibriSpeech --pretrained_dir /models/wav2vec2-base
#   ./run.sh --recipe LibriSpeech/ASR --data_folder ... --pretrained_dir ... --stage 3 --guide waypoint
recipe_description="LibriSpeech ASR: wav2vec2-family teacher (CTC), CALD students, evaluation.
Stages: 0 manifests, 1 tokens + word LM, 2 teacher, 3 students, 4 evaluation (RESULTS.md)."
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/asr_stages.sh"

train_splits="train-clean-100";   options_help[train_splits]="training splits (space-separated), e.g. 'train-clean-100 train-clean-360 train-other-500'"
dev_splits="dev-clean";           options_help[dev_splits]="validation splits"
test_splits="test-clean test-other"; options_help[test_splits]="test splits (stage 4 reports a WER for each)"
corpus_options students="librispeech_mamba librispeech_linformer" results_title="LibriSpeech ASR"
asr_options
options_help[lm]="word n-gram for stage 4 (ARPA or KenLM binary); default: built in stage 1 from <data_folder>/librispeech-lm-norm.txt if there, else the training transcripts"
parse_options "$@"
begin_recipe lm
yaml_list() { local IFS=,; echo "[$*]"; }
# shellcheck disable=SC2086
split_overrides=(--train_splits="$(yaml_list $train_splits)" --dev_splits="$(yaml_list $dev_splits)"
                 --test_splits="$(yaml_list $test_splits)" --token_type="$token_type")

if stage 0 "Manifests of $train_splits / $dev_splits / $test_splits" "$data/train.csv" "$data/valid.csv"; then
    # shellcheck disable=SC2086
    run python librispeech_prepare.py "$data_folder" "$data" --train_splits $train_splits \
        --dev_splits $dev_splits --test_splits $test_splits
    stage_done
fi

corpus=librispeech
test_sets=()
for s in $test_splits; do test_sets+=("$s=$data/$s.csv"); done
longform_sets=()
lm_text="$data_folder/librispeech-lm-norm.txt"
lm_lower=""
asr_stages
