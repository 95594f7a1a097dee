#!/usr/bin/env python3
"""Train a SLURP intent classifier: the wav2vec2-family teacher or a CALD student.

The YAML decides which. ``hparams/slurp_teacher.yaml`` fine-tunes the local
pretrained checkpoint with a classification head (``guide: unguided``,
snapshots kept as waypoints); ``hparams/slurp_mamba.yaml`` /
``slurp_linformer.yaml`` convert it (``to_linear_time``) and train the student
under the guide it names. SLURP is prepared first (``prepare.py``, on the main
process only, skipped when the manifests are current); the rest, label encoder
to exported model, is ``speechbrain_cald.tasks.utterance``.

    python train.py hparams/slurp_teacher.yaml --data_folder=/data/SLURP \\
        --pretrained_dir=/models/wav2vec2-large-lv60 --output_folder=results/teacher
    python train.py hparams/slurp_mamba.yaml --data_folder=/data/SLURP \\
        --pretrained_dir=/models/wav2vec2-large-lv60 --teacher_folder=results/teacher \\
        --output_folder=results/slurp_mamba_target [--guide=waypoint]
    torchrun --nproc_per_node=4 train.py hparams/slurp_mamba.yaml ...
"""

from __future__ import annotations

import sys

from speechbrain.utils.distributed import run_on_main

from prepare import SYNTHETIC, prepare_slurp
from speechbrain_cald.experiment import start_experiment
from speechbrain_cald.tasks.utterance import fit_utterance_classifier


def main(argv):
    exp = start_experiment(argv)
    hp = exp.hparams
    kwargs = dict(data_folder=hp["data_folder"], save_folder=hp["prepare_folder"], use_synthetic=hp["use_synthetic"])
    run_on_main(prepare_slurp, kwargs=kwargs)
    manifests = prepare_slurp(**kwargs, skip_prep=True)  # the paths only
    train = [manifests["train"]] + ([manifests[SYNTHETIC]] if hp["use_synthetic"] else [])
    fit_utterance_classifier(exp, train, manifests["devel"])


if __name__ == "__main__":
    main(sys.argv[1:])
