#!/usr/bin/env bash
# GLUE (one task) from a local copy, a local RoBERTa/BERT teacher -> Linformer (the CALD
# paper's text student) and BiMamba2 CALD students -> the task's metrics, speed vs length.
#
#   ./run.sh --recipe GLUE/TextClassification --data_folder /data/glue \
#       --pretrained_dir /models/roberta-base --task sst2
#   bash recipes/GLUE/TextClassification/run.sh ... --stage 3 --guide waypoint
recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipe_script="${BASH_SOURCE[0]}"
recipe_description="GLUE: fine-tune a local RoBERTa/BERT on one task, CALD-train Linformer and BiMamba2 students.
Stages: 0 manifests, 1 (nothing: tokenizer and labels come ready), 2 teacher, 3 students, 4 evaluation."
source "$recipe_dir/../../lib/text_classification.sh"

task="";  options_help[task]="GLUE task (required): cola|sst2|mrpc|qqp|stsb|mnli|qnli|rte|wnli"
exp_default="$recipe_dir/results/<task>"
corpus_options exp="$exp_default" students="glue_linformer glue_mamba"
text_classification_options "--bench_lengths 128 512"
parse_options "$@"
require_options data_folder pretrained_dir task
case "$task" in
    cola|sst2|mrpc|qqp|stsb|mnli|qnli|rte|wnli) ;;
    *) die_usage "--task: unknown GLUE task '$task' (expected one of cola sst2 mrpc qqp stsb mnli qnli rte wnli)" ;;
esac
[ "$exp" = "$exp_default" ] && exp="$recipe_dir/results/$task"   # one experiment folder per task
: "${results_title:=GLUE $task}"
begin_recipe

yaml_prefix=glue
train_args=(--data_folder="$data_folder" --pretrained_dir="$pretrained_dir" --task="$task")
eval_options=(--bench_lengths 64 128 256 512)
text_classification_stages
