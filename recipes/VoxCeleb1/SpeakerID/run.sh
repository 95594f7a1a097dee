#!/usr/bin/env bash
# VoxCeleb1 speaker identification with CALD: the corpus as distributed (wav/ + iden_split.txt)
# -> manifests -> label encoder -> wav2vec2-family teacher fine-tuned on random 3 s crops ->
# CALD students (BiMamba2, Linformer) -> accuracy / macro-F1 on whole utterances, confusions,
# speed and memory vs length, RESULTS.md.
#
#   ./run.sh --recipe VoxCeleb1/SpeakerID --data_folder /data/VoxCeleb1 --pretrained_dir /models/wav2vec2-large-lv60
#   bash recipes/VoxCeleb1/SpeakerID/run.sh --data_folder ... --pretrained_dir ... --stage 3 --guide waypoint
#   bash recipes/VoxCeleb1/SpeakerID/run.sh --help
recipe_description="VoxCeleb1 speaker identification: wav2vec2-family teacher, CALD students (BiMamba2, Linformer).
Stages: 0 manifests (train, dev, test from iden_split.txt), 1 label encoder, 2 teacher, 3 students, 4 evaluation."
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/classification_stages.sh"

split_file="";   options_help[split_file]="iden_split.txt when not in <data_folder> or <data_folder>/meta"
corpus_options students="voxceleb1_mamba voxceleb1_linformer" \
    results_title="VoxCeleb1 speaker identification"
classification_options
parse_options "$@"
begin_recipe split_file
common=(--data_folder="$data_folder" --pretrained_dir="$pretrained_dir")
if [ -n "$split_file" ]; then common+=(--split_list="$split_file"); fi

if stage 0 "Manifests of the identification splits (1 train, 2 dev, 3 test)" "$data/train.csv" "$data/dev.csv" "$data/test.csv"; then
    run python prepare.py --data_folder "$data_folder" --save_folder "$data" ${split_file:+--split_file "$split_file"}
    stage_done
fi

train_manifests=("$data/train.csv")
classification_stages hparams/voxceleb1_teacher.yaml dev="$data/dev.csv" test="$data/test.csv"
