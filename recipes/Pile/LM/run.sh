#!/usr/bin/env bash
# The Pile (or any JSON-lines text) LM recipe: a local GPT-NeoX / Pythia checkpoint
# -> (optional) continued pre-training, the "Std." baseline -> CALD Mamba students
# -> perplexity, zero-shot tasks, generation speed vs prompt length.
#
#   ./run.sh --recipe Pile/LM --data_folder /data/pile --pretrained_dir /models/pythia-1b
#   bash recipes/Pile/LM/run.sh --data_folder D --pretrained_dir P --stage 3 --guide waypoint
#   bash recipes/Pile/LM/run.sh --help
recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipe_script="${BASH_SOURCE[0]}"
recipe_description="Pile LM: JSON-lines corpus (train/*.jsonl[.zst], val.jsonl[.zst], test.jsonl[.zst]), a local Pythia
checkpoint, Mamba students by CALD. Stages: 0 manifests, 1 token shards, 2 continued pre-training
of the teacher (Std.), 3 students, 4 perplexity + zero-shot + generation speed -> RESULTS.md."
source "$recipe_dir/../../lib/stages.sh"

eval_blocks=512;   options_help[eval_blocks]="perplexity on the first N blocks of val and test (empty: all)"
lambada_file="";   options_help[lambada_file]="zero-shot LAMBADA: a {\"text\": ...} JSON-lines file (skipped if empty or absent)"
choice_files="";   options_help[choice_files]="zero-shot multiple choice: 'name=path ...' of {ctx, endings|choices, label} lines"
corpus_options students="pile_mamba pile_mamba:unguided" results_title="Pile LM recipe: results"
report_options speechbrain_cald.evaluation.lm "--bench_prompt_lengths 512 2000"
parse_options "$@"
begin_recipe lambada_file

if stage 0 "Check the corpus, one manifest per split" "$exp/data/train.csv" "$exp/data/val.csv"; then
    run python -m speechbrain_cald.data.token_blocks --data_folder "$data_folder" --save_folder "$exp/data"
    stage_done
fi

if stage 1 "Tokenise with the checkpoint's tokenizer into token shards" "$exp/data/tokens/train.bin" "$exp/data/tokens/val.bin"; then
    run python -m speechbrain_cald.data.token_blocks --save_folder "$exp/data" --tokenizer "$pretrained_dir"
    stage_done
fi

# stages 2-4: recipes/lib/lm_stages.sh
corpus=pile
common=(--data_folder="$data_folder" --pretrained_dir="$pretrained_dir")
teacher_title="Continued pre-training of the teacher (Std. baseline, waypoints)"
reference_models=("pretrained=$pretrained_dir")
# shellcheck disable=SC2206  # choice_files is a list
report_args=(${eval_blocks:+--eval_blocks "$eval_blocks"} --lambada_file "$lambada_file" --choice_files $choice_files)
source "$recipe_dir/../../lib/lm_stages.sh"
