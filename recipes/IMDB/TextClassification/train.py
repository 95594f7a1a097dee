#!/usr/bin/env python3
"""Fine-tune the text teacher or CALD-train a student, as the YAML says (IMDB).

The data pipeline (tokenised manifests) and the Brain hooks are the package's,
shared by every text recipe (``speechbrain_cald.tasks.text_classification``);
this recipe's specifics are in its YAMLs: the corpus preparation (``prepare``),
the model (``pretrained_dir``), the student conversion and the guide.

    python train.py hparams/imdb_teacher.yaml --data_folder=/data --pretrained_dir=/models/roberta-base \\
        --output_folder=results/teacher
    python train.py hparams/imdb_linformer.yaml --data_folder=/data --pretrained_dir=/models/roberta-base \\
        --teacher_folder=results/teacher --output_folder=results/imdb_linformer_target
    torchrun --nproc_per_node=4 train.py hparams/imdb_linformer.yaml ...   # SpeechBrain DDP
"""

import sys

from speechbrain_cald.tasks.text_classification import train

if __name__ == "__main__":
    train(sys.argv[1:])
