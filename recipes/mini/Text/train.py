#!/usr/bin/env python3
"""Fine-tune the text teacher or CALD-train a student, as the YAML says (mini/Text: tweets).

The data pipeline (tokenised manifests) and the Brain hooks are the package's,
shared by every text recipe (``speechbrain_cald.tasks.text_classification``);
this recipe's specifics are in its YAMLs: the corpus preparation (``prepare``),
the model (``pretrained_dir``), the student conversion and the guide.

    python train.py hparams/mini_teacher.yaml --output_folder=results/teacher
    python train.py hparams/mini_linformer.yaml --teacher_folder=results/teacher \\
        --output_folder=results/mini_linformer_target [--guide=unguided]
"""

import sys

from speechbrain_cald.tasks.text_classification import train

if __name__ == "__main__":
    train(sys.argv[1:])
