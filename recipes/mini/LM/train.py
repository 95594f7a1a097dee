#!/usr/bin/env python3
"""Train the mini LM teacher or a CALD student: the Pile recipe's train.py, on the GCIDE corpus.

The mini corpus is written in the Pile's JSON-lines layout (prepare.py), so the
data pipeline and the Brain hooks are those of ``recipes/Pile/LM/train.py``;
this file runs it, so that the recipe works the SpeechBrain way from here:

    python train.py hparams/mini_teacher.yaml --data_folder=data --output_folder=results/teacher
    python train.py hparams/mini_mamba.yaml --data_folder=data --teacher_folder=results/teacher \\
        --output_folder=results/mini_mamba_target [--guide=unguided]
"""

import os
import runpy

if __name__ == "__main__":
    runpy.run_path(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Pile", "LM", "train.py"),
        run_name="__main__",
    )
