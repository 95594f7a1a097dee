#!/usr/bin/env bash
# The mini LM recipe, the offline default of the LM path: GCIDE dictionary text
# (Debian dict-gcide) -> BPE -> a small GPT-NeoX trained from scratch -> CALD Mamba
# students (target-guided, unguided) -> perplexity and generation speed vs prompt length.
# Runs from any directory; outputs go to data/ and results/ beside this file.
#
#   ./run.sh --recipe mini/LM                          # stages 0-4
#   bash recipes/mini/LM/run.sh --stage 3 --guide waypoint
#   bash recipes/mini/LM/run.sh --help
recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipe_script="${BASH_SOURCE[0]}"
recipe_description="Mini LM: GCIDE text, GPT-NeoX teacher from scratch, CALD Mamba students, evaluation.
Stages: 0 corpus + manifests, 1 BPE + token shards, 2 teacher, 3 students, 4 evaluation."
source "$recipe_dir/../../lib/stages.sh"

stage=0; stop_stage=4
data="$recipe_dir/data";          options_help[data]="corpus/ and tokenizer/ (stages 0-1 write, later stages read)"
exp="$recipe_dir/results";        options_help[exp]="experiment folder: data/ (manifests, token shards), teacher/, students, logs"
max_train=40000;                  options_help[max_train]="GCIDE training entries kept (0: all ~117k)"
gcide=/usr/share/dictd/gcide.dict.dz; options_help[gcide]="the GCIDE dictionary (Debian dict-gcide, GPL-2+)"
vocab_size=4096;                  options_help[vocab_size]="BPE vocabulary (the YAMLs' vocab_size must match)"
students="mini_mamba mini_mamba:unguided"; options_help[students]="students to train/evaluate: yaml names, name:guide pins a guide"
guide="";                         options_help[guide]="guide for students without a pinned one (default: the YAML's): unguided|target|trajectory|waypoint|hybrid"
teacher_args="";                  options_help[teacher_args]="extra hparams overrides for the teacher, e.g. '--train_blocks=800'"
student_args="";                  options_help[student_args]="extra hparams overrides for every student"
bench_prompt_lengths="128 500 1000 2000"; options_help[bench_prompt_lengths]="prompt lengths of the generation benchmark"
check_faster_at=2000;             options_help[check_faster_at]="target: students generate faster than the teacher after a prompt this long"
eval_args="";                     options_help[eval_args]="extra options for speechbrain_cald.evaluation.lm"
published_results_md="$recipe_dir/RESULTS.md"  # the published record; a run with --exp elsewhere writes <exp>/RESULTS.md
results_md_option
parse_options "$@"
absolute_paths data exp results_md gcide
default_results_md

stage_times="$exp/stage_times.tsv"
stage_commands="$exp/commands.sh"
cd "$recipe_dir"
check_students   # an unknown student stops here, before anything is written

if stage 0 "GCIDE corpus (Debian dict-gcide) in the Pile's layout, manifests" "$data/corpus/val.jsonl" "$exp/data/train.csv"; then
    run python prepare.py corpus --data_folder "$data" --max_train "$max_train" --gcide "$gcide"
    run python -m speechbrain_cald.data.token_blocks --data_folder "$data/corpus" --save_folder "$exp/data"
    stage_done
fi

if stage 1 "BPE tokenizer of the training text, token shards" "$data/tokenizer/tokenizer.json" "$exp/data/tokens/train.bin"; then
    run python prepare.py tokenizer --data_folder "$data" --vocab_size "$vocab_size"
    run python -m speechbrain_cald.data.token_blocks --save_folder "$exp/data" --tokenizer "$data/tokenizer"
    stage_done
fi

# stages 2-4: recipes/lib/lm_stages.sh
corpus=mini
common=(--data_folder="$data")
teacher_title="Train the GPT-NeoX teacher from scratch (with waypoint snapshots)"
reference_models=()
results_title="Mini LM recipe: results"
# shellcheck disable=SC2206  # bench_prompt_lengths is a list
report_args=(--eval_blocks 320 --bench_prompt_lengths $bench_prompt_lengths --bench_new_tokens 64 --bench_repeats 5
             --check_ppl_within 15 --check_faster_at "$check_faster_at" --check_minutes 15)
source "$recipe_dir/../../lib/lm_stages.sh"
