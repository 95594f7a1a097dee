#!/usr/bin/env bash
# SLURP intent classification with CALD: the corpus as distributed -> manifests ->
# label encoder -> wav2vec2-family teacher fine-tuned with a classification head ->
# CALD students (BiMamba2, Linformer) -> accuracy / macro-F1, confusions, speed, RESULTS.md.
#
#   ./run.sh --recipe SLURP/SLU --data_folder /data/SLURP --pretrained_dir /models/wav2vec2-large-lv60
#   bash recipes/SLURP/SLU/run.sh --data_folder ... --pretrained_dir ... --stage 3 --guide waypoint
#   bash recipes/SLURP/SLU/run.sh --help
recipe_description="SLURP intents: wav2vec2-family teacher, CALD students (BiMamba2, Linformer), accuracy per split.
Stages: 0 manifests (train, devel, test[, train_synthetic]), 1 label encoder, 2 teacher, 3 students, 4 evaluation."
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/classification_stages.sh"

use_synthetic=true;  options_help[use_synthetic]="train on train_synthetic.jsonl too (recordings in slurp_synth): true|false"
corpus_options students="slurp_mamba slurp_linformer" results_title="SLURP intent classification"
classification_options
parse_options "$@"
begin_recipe
[[ "$use_synthetic" == true || "$use_synthetic" == false ]] || die_usage "--use_synthetic takes true or false (got '$use_synthetic')"
train_manifests=("$data/train.csv")
if [ "$use_synthetic" = true ]; then train_manifests+=("$data/train_synthetic.csv"); fi
common=(--data_folder="$data_folder" --pretrained_dir="$pretrained_dir" --use_synthetic="$use_synthetic")

if stage 0 "Manifests of SLURP's splits" "${train_manifests[@]}" "$data/devel.csv" "$data/test.csv"; then
    run python prepare.py --data_folder "$data_folder" --save_folder "$data" --use_synthetic "$use_synthetic"
    stage_done
fi

classification_stages hparams/slurp_teacher.yaml devel="$data/devel.csv" test="$data/test.csv"
