#!/usr/bin/env bash
# The mini ASR recipe: espeak-ng corpus -> character units -> conformer CTC teacher
# -> CALD students (BiMamba2, Linformer, parameter-sharing) -> WER (greedy and
# lexicon + word 3-gram), long-form and speed evaluation.
# Runs from any directory; outputs go to data/ and results/ beside this file.
#
#   bash recipes/mini/ASR/run.sh                         # stages 0-4
#   bash recipes/mini/ASR/run.sh --stage 3 --guide waypoint
#   bash recipes/mini/ASR/run.sh --help
recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipe_script="${BASH_SOURCE[0]}"
recipe_description="Mini ASR: espeak-ng corpus, conformer CTC teacher, CALD students, evaluation.
Stages: 0 corpus, 1 units + word LM, 2 pre-training + teacher, 3 students, 4 evaluation."
source "$recipe_dir/../../lib/stages.sh"

# Students of stage 3/4: hparams/<name>.yaml, optionally <name>:<guide> to pin a guide and
# +<key>=<value> for one hparams override that names a variant (its own folder). The
# BiMamba2 student under all five CALD guides (the target student on all training
# utterances, the four others on the first 500: the 25-minute budget); the Linformer;
# the two sharing students, the recursive one with MiniALBERT's objective from averaged
# teacher layers (ours) and from a fresh shared layer (MiniALBERT's published student).
STUDENTS="mini_mamba mini_mamba:unguided+train_utts=500 mini_mamba:trajectory+train_utts=500 \
mini_mamba:waypoint+train_utts=500 mini_mamba:hybrid+train_utts=500 \
mini_linformer mini_residual mini_recursive mini_recursive+shared_init=random"

stage=0; stop_stage=4
data="$recipe_dir/data";          options_help[data]="corpus folder (stage 0 writes, later stages read)"
exp="$recipe_dir/results";        options_help[exp]="experiment folder (models, logs, RESULTS inputs)"
n_train=3000;                     options_help[n_train]="training utterances"
n_valid=150;                      options_help[n_valid]="validation utterances (unseen voices)"
n_test=300;                       options_help[n_test]="test utterances (unseen voices)"
n_pretrain=2000;                  options_help[n_pretrain]="pre-training utterances (own sentences and voices)"
longform="30 60 120";             options_help[longform]="long-form recording lengths in seconds"
students="$STUDENTS";             options_help[students]="students to train/evaluate: yaml names, name:guide pins a guide, +key=value a variant"
guide="";                         options_help[guide]="guide for students without a pinned one (default: the YAML's): unguided|target|trajectory|waypoint|hybrid"
teacher_args="";                  options_help[teacher_args]="extra hparams overrides for the teacher (and the pre-training run), e.g. '--number_of_epochs=2'"
pretrain_args="";                 options_help[pretrain_args]="extra hparams overrides for the pre-training run only (after teacher_args)"
student_args="";                  options_help[student_args]="extra hparams overrides for every student (a +key=value variant keeps its own key)"
eval_args="";                     options_help[eval_args]="extra options for evaluate.py, e.g. '--bench_seconds 10 30'"
published_results_md="$recipe_dir/RESULTS.md"  # the published record; a run with --exp elsewhere writes <exp>/RESULTS.md
results_md_option
parse_options "$@"
absolute_paths data exp results_md
default_results_md

stage_times="$exp/stage_times.tsv"
stage_commands="$exp/commands.sh"
cd "$recipe_dir"

# variant_plan NAME[:GUIDE][+KEY=VALUE]: student_plan (plan_name, plan_guide, plan_out) plus
# an optional override naming a variant: plan_override (--KEY=VALUE or empty), the folder
# <yaml>_<guide>_<key>-<value> and plan_model, the model's name for evaluate.py
# (<yaml without mini_>_<guide>[+<key>-<value>]). In the caller's shell, as student_plan.
variant_plan() {
    local entry="$1" variant=""
    if [[ "$entry" == *+* ]]; then
        variant="${entry#*+}"; entry="${entry%%+*}"
        [[ "$variant" =~ ^[A-Za-z_][A-Za-z0-9_]*=[^[:space:]=]+$ ]] || die_usage "student '$1': expected +key=value after the name"
    fi
    student_plan "$entry"
    plan_override=""; plan_model="${plan_name#mini_}_${plan_guide}"
    if [ -n "$variant" ]; then
        plan_out="${plan_out}_${variant/=/-}"; plan_override="--$variant"; plan_model="${plan_model}+${variant/=/-}"
    fi
}
check_students variant_plan   # an unknown student stops here, before anything is written

if stage 0 "Synthesise the espeak-ng corpus (+ pre-training set, long-form, LibriVox if installed)" "$data/corpus.json"; then
    run python prepare.py --data_folder "$data" --n_train "$n_train" --n_valid "$n_valid" --n_test "$n_test" \
        --n_pretrain "$n_pretrain" --longform $longform
    stage_done
fi

if stage 1 "Character units and a word 3-gram LM of the training transcripts" "$data/units.txt" "$data/lm_3gram.arpa"; then
    run python -m speechbrain_cald.data.units "$data/units.txt" "$data/train.csv"
    run python -m speechbrain_cald.decoders.ngram "$data/lm_3gram.arpa" "$data/train.csv" --order 3
    stage_done
fi

# The paper's models are a pretrained transformer fine-tuned on the task: the conformer is
# first pre-trained on other data (the pre-training corpus), and the teacher is that model
# fine-tuned on the task. Guides whose networks start from "pretrained" start from it.
if stage 2 "Pre-train the conformer on the pre-training corpus (the pretrained model)" "$exp/pretrained/model.ckpt"; then
    # shellcheck disable=SC2086  # lists of overrides; of a key given twice train.py takes the later
    run python train.py hparams/mini_teacher.yaml --data_folder="$data" --output_folder="$exp/pretrained" \
        --train_csv="$data/pretrain.csv" --snapshot_interval=0 --number_of_epochs=1 $teacher_args $pretrain_args \
        $overwrite_arg
    stage_done
fi

if stage 2 "Fine-tune the pretrained conformer on the task: the CTC teacher (with waypoint snapshots)" "$exp/teacher/model.ckpt"; then
    # shellcheck disable=SC2086
    run python train.py hparams/mini_teacher.yaml --data_folder="$data" --output_folder="$exp/teacher" \
        --pretrained_ckpt="$exp/pretrained/model.ckpt" $teacher_args $overwrite_arg
    stage_done
fi

for entry in $students; do
    variant_plan "$entry"
    if stage 3 "CALD student $plan_name, guide $plan_guide${plan_override:+, $plan_override}" "$plan_out/model.ckpt"; then
        # shellcheck disable=SC2086  # a variant's override comes last: it wins over --student_args (it names the folder)
        run python train.py "hparams/$plan_name.yaml" --data_folder="$data" --teacher_folder="$exp/teacher" \
            --output_folder="$plan_out" --guide="$plan_guide" $student_args $plan_override $overwrite_arg
        stage_done
    fi
done

models=("teacher=$exp/teacher")
for entry in $students; do
    variant_plan "$entry"
    models+=("$plan_model=$plan_out")
done
# stage 4 reruns when a model, the data, the decoder or the evaluation's options changed
if evaluation_stage "Evaluate: WER (short, long-form, LibriVox), speed and memory vs length" "$data" \
        "$data/units.txt" "$data/lm_3gram.arpa" "$data/test.csv" evaluate.py hparams/decode.yaml; then
    # shellcheck disable=SC2086
    run python evaluate.py --data_folder "$data" --exp_folder "$exp" --models "${models[@]}" \
        --results_md "$results_md" --stage_times "$stage_times" \
        --command "bash recipes/mini/ASR/run.sh$cli_args" $eval_args
    stage_done
fi
