#!/usr/bin/env bash
# IMDB movie reviews from a local aclImdb/, a local RoBERTa/BERT teacher -> Linformer and
# BiMamba2 CALD students -> accuracy (truncated and full-length reviews), speed vs length.
#
#   ./run.sh --recipe IMDB/TextClassification --data_folder /data --pretrained_dir /models/roberta-base
#   bash recipes/IMDB/TextClassification/run.sh ... --stage 3 --guide waypoint
recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipe_script="${BASH_SOURCE[0]}"
recipe_description="IMDB: fine-tune a local RoBERTa/BERT on movie reviews, CALD-train Linformer and BiMamba2 students;
students also read whole reviews where they can. Stages: 0 manifests, 1 (nothing: tokenizer and
labels come ready), 2 teacher, 3 students, 4 evaluation."
source "$recipe_dir/../../lib/text_classification.sh"

corpus_options students="imdb_linformer imdb_mamba" results_title="IMDB"
text_classification_options "--bench_lengths 512 4096"
parse_options "$@"
begin_recipe

yaml_prefix=imdb
train_args=(--data_folder="$data_folder" --pretrained_dir="$pretrained_dir")
eval_options=(--full_length --bench_lengths 128 512 1024 2048 4096)
text_classification_stages
