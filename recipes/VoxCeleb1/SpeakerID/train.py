#!/usr/bin/env python3
"""Train a VoxCeleb1 speaker-identification model (teacher or CALD student, by its YAML).

The teacher (``hparams/voxceleb1_teacher.yaml``) is the local pretrained
wav2vec2-family checkpoint fine-tuned with a classification head; the students
(``voxceleb1_{mamba,linformer}.yaml``) are that teacher converted and trained
under a guide. Training reads random fixed-length crops (``train_crop_seconds``),
validation whole utterances; ``prepare.py`` writes the manifests first, and
``speechbrain_cald.tasks.utterance`` does the rest. The teacher on 4 GPUs, for
instance (README: every command):

    torchrun --nproc_per_node=4 train.py hparams/voxceleb1_teacher.yaml --data_folder=/data/VoxCeleb1 \\
        --pretrained_dir=/models/w2v2 --output_folder=results/teacher
"""

from __future__ import annotations

import functools
import sys

from prepare import prepare_voxceleb1
from speechbrain_cald.experiment import start_experiment
from speechbrain_cald.tasks.utterance import fit_utterance_classifier


def main(argv):
    exp = start_experiment(argv)
    hp = exp.hparams
    prepare = functools.partial(prepare_voxceleb1, hp["data_folder"], hp["prepare_folder"], hp["split_list"])
    fit_utterance_classifier(exp, prepare, ["train"], "dev")  # iden_split.txt's codes 1 and 2


if __name__ == "__main__":
    main(sys.argv[1:])
