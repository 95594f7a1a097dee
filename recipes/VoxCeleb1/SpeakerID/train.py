#!/usr/bin/env python3
"""Train a VoxCeleb1 speaker classifier: the wav2vec2-family teacher or a CALD student.

The YAML decides which. ``hparams/voxceleb1_teacher.yaml`` fine-tunes the local
pretrained checkpoint with a classification head (``guide: unguided``,
snapshots kept as waypoints); ``hparams/voxceleb1_mamba.yaml`` /
``voxceleb1_linformer.yaml`` convert it (``to_linear_time``) and train the
student under the guide it names. Training reads random fixed-length crops
(``train_crop_seconds``), validation whole utterances. VoxCeleb1 is prepared
first (``prepare.py``, on the main process only, skipped when the manifests are
current); the rest, label encoder to exported model, is
``speechbrain_cald.tasks.utterance``.

    python train.py hparams/voxceleb1_teacher.yaml --data_folder=/data/VoxCeleb1 \\
        --pretrained_dir=/models/wav2vec2-large-lv60 --output_folder=results/teacher
    python train.py hparams/voxceleb1_mamba.yaml --data_folder=/data/VoxCeleb1 \\
        --pretrained_dir=/models/wav2vec2-large-lv60 --teacher_folder=results/teacher \\
        --output_folder=results/voxceleb1_mamba_target [--guide=waypoint]
    torchrun --nproc_per_node=4 train.py hparams/voxceleb1_mamba.yaml ...
"""

from __future__ import annotations

import sys

from speechbrain.utils.distributed import run_on_main

from prepare import prepare_voxceleb1
from speechbrain_cald.experiment import start_experiment
from speechbrain_cald.tasks.utterance import fit_utterance_classifier


def main(argv):
    exp = start_experiment(argv)
    hp = exp.hparams
    kwargs = dict(data_folder=hp["data_folder"], save_folder=hp["prepare_folder"], split_list=hp["split_list"])
    run_on_main(prepare_voxceleb1, kwargs=kwargs)
    manifests = prepare_voxceleb1(**kwargs, skip_prep=True)  # the paths only
    fit_utterance_classifier(exp, [manifests["train"]], manifests["dev"])


if __name__ == "__main__":
    main(sys.argv[1:])
