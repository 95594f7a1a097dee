#!/usr/bin/env python3
"""Fine-tune the text teacher or CALD-train a student, as the YAML says (GLUE, one task).

The data pipeline (tokenised manifests) and the Brain hooks are the package's,
shared by every text recipe (``speechbrain_cald.tasks.text_classification``);
this recipe's specifics are in its YAMLs: the corpus preparation (``prepare``),
the model (``pretrained_dir``), the student conversion and the guide.

    python train.py hparams/glue_teacher.yaml --data_folder=/data/glue --pretrained_dir=/models/roberta-base \\
        --task=sst2 --output_folder=results/sst2/teacher
    python train.py hparams/glue_linformer.yaml --data_folder=/data/glue --pretrained_dir=/models/roberta-base \\
        --task=sst2 --teacher_folder=results/sst2/teacher --output_folder=results/sst2/glue_linformer_target
    torchrun --nproc_per_node=4 train.py hparams/glue_linformer.yaml ...   # SpeechBrain DDP
"""

import sys

from speechbrain_cald.tasks.text_classification import train

if __name__ == "__main__":
    train(sys.argv[1:])
