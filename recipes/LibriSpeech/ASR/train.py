#!/usr/bin/env python3
"""Train a CTC model on LibriSpeech: the fine-tuned wav2vec2-family teacher or a CALD student.

The YAML decides which: ``hparams/librispeech_teacher.yaml`` fine-tunes the
local pretrained checkpoint (``--pretrained_dir``) with a CTC head;
``hparams/librispeech_mamba.yaml`` / ``librispeech_linformer.yaml`` convert it
and train the student under the YAML's guide. Preparation (manifests, tokens)
runs here too, on the main process, and is skipped when its outputs match.

    python train.py hparams/librispeech_teacher.yaml --data_folder=/data/LibriSpeech \\
        --pretrained_dir=/models/wav2vec2-base --output_folder=results/teacher
    python train.py hparams/librispeech_mamba.yaml --data_folder=/data/LibriSpeech \\
        --pretrained_dir=/models/wav2vec2-base --teacher_folder=results/teacher \\
        --output_folder=results/librispeech_mamba_target
    torchrun --nproc_per_node=4 train.py hparams/librispeech_mamba.yaml ...   # several GPUs
"""

import sys

from librispeech_prepare import prepare_librispeech

from speechbrain_cald.experiment import start_experiment
from speechbrain_cald.tasks.ctc_brain import train_ctc


def main(argv):
    exp = start_experiment(argv)
    hp = exp.hparams
    splits = [*hp["train_splits"], *hp["dev_splits"], *hp["test_splits"]]
    merge = {"train": hp["train_splits"], "valid": hp["dev_splits"]}
    train_ctc(exp, lambda: prepare_librispeech(hp["data_folder"], hp["prep_folder"], splits, hp.get("skip_prep", False), merge))


if __name__ == "__main__":
    main(sys.argv[1:])
