#!/usr/bin/env python3
"""Train a CTC model on TED-LIUM (release 3 legacy split or release 2): the fine-tuned teacher or a CALD student.

The YAML decides which: ``hparams/tedlium_teacher.yaml`` fine-tunes the local
pretrained checkpoint (``--pretrained_dir``) with a CTC head;
``hparams/tedlium_mamba.yaml`` / ``tedlium_linformer.yaml`` convert it and train
the student under the YAML's guide, with logits distillation (CALD's TED-LIUM
setting). Preparation (segment manifests, tokens) runs here too, on the main
process, and is skipped when its outputs match.

    python train.py hparams/tedlium_teacher.yaml --data_folder=/data/TEDLIUM_release-3 \\
        --pretrained_dir=/models/wav2vec2-large-lv60 --output_folder=results/teacher
    python train.py hparams/tedlium_mamba.yaml --data_folder=/data/TEDLIUM_release-3 \\
        --pretrained_dir=/models/wav2vec2-large-lv60 --teacher_folder=results/teacher \\
        --output_folder=results/tedlium_mamba_target
"""

import sys

from tedlium_prepare import prepare_tedlium

from speechbrain_cald.experiment import start_experiment
from speechbrain_cald.tasks.ctc_brain import train_ctc


def main(argv):
    exp = start_experiment(argv)
    hp = exp.hparams
    splits = [*hp["train_splits"], *hp["dev_splits"], *hp["test_splits"]]
    train_ctc(exp, lambda: prepare_tedlium(hp["data_folder"], hp["prep_folder"], splits, hp.get("skip_prep", False)))


if __name__ == "__main__":
    main(sys.argv[1:])
