#!/usr/bin/env python3
"""Train a SLURP intent classifier: the wav2vec2-family teacher or a CALD student, as the YAML says.

``hparams/slurp_teacher.yaml`` fine-tunes the local pretrained checkpoint with a
classification head (snapshots kept as waypoints); ``slurp_mamba.yaml`` and
``slurp_linformer.yaml`` convert that teacher and train the student under their
guide. Everything after the corpus's own ``prepare.py`` (run on the main process,
skipped when current: label encoder, training, export) is
``speechbrain_cald.tasks.utterance``'s. The README lists every command; a student:

    python train.py hparams/slurp_mamba.yaml --data_folder=/data/SLURP --pretrained_dir=/models/w2v2 \\
        --teacher_folder=results/teacher --output_folder=results/slurp_mamba_target [--guide=waypoint]
"""

from __future__ import annotations

import functools
import sys

from prepare import SYNTHETIC, prepare_slurp
from speechbrain_cald.experiment import start_experiment
from speechbrain_cald.tasks.utterance import fit_utterance_classifier


def main(argv):
    exp = start_experiment(argv)
    hp = exp.hparams
    synthetic = hp["use_synthetic"]  # SLURP's synthetic recordings are training data too
    prepare = functools.partial(prepare_slurp, hp["data_folder"], hp["prepare_folder"], synthetic)
    fit_utterance_classifier(exp, prepare, ["train"] + ([SYNTHETIC] if synthetic else []), "devel")


if __name__ == "__main__":
    main(sys.argv[1:])
