#!/usr/bin/env bash
# Fill a folder (default .gpu_carry/) with what `python -m speechbrain_cald.bench.gpu_recipe` needs on a lent
# GPU machine and that machine's image lacks. The image has torch, transformers, triton, einops, numpy, scipy,
# sentencepiece, huggingface_hub, matplotlib, cmake and a C++ / CUDA compiler, and no internet. This script
# runs HERE (with internet) and fetches:
#   - cp312 manylinux wheels of the recipe's other dependencies (speechbrain and what it and our
#     evaluation import: hyperpyyaml, ruamel.yaml, jiwer, rapidfuzz, soundfile, cffi, pycparser,
#     pyctcdecode, pygtrie), the versions of requirements.txt;
#   - the sdists of kenlm (no wheel exists: pip compiles it there, about a minute) and of mamba_ssm and
#     causal_conv1d (bench.gpu_recipe --kernel-src builds their CUDA modules for the GPU present with
#     tools/build_mamba_kernels.py).
# About 10 MB in all. Keep the folder out of git (.git/info/exclude) and name it in the device call's carry.
#
#   bash tools/gpu_carry.sh [DEST]
set -euo pipefail
dest="${1:-.gpu_carry}"
py="${PYTHON:-python3}"
mkdir -p "$dest"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d "$dest" speechbrain==1.1.2 hyperpyyaml==1.2.3 ruamel.yaml==0.18.17 ruamel.yaml.clib==0.2.15 jiwer==4.0.0 \
    rapidfuzz==3.14.6 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 pyctcdecode==0.5.0 pygtrie==2.5.0
# sdists: their setup.py files would look for CUDA (mamba_ssm, causal_conv1d) while pip reads their metadata
MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE \
    "$py" -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$dest" \
    kenlm==0.3.0 mamba-ssm==2.3.2.post1 causal-conv1d==1.7.0
ls -l "$dest"
