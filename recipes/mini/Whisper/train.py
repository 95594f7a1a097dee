#!/usr/bin/env python3
"""Export Whisper tiny.en as the teacher, or CALD-train a linear-time student of it, as the YAML says.

The data pipeline (30-second log-mel windows, Whisper's tokens) and the Brain
hooks are the package's (``speechbrain_cald.tasks.whisper_asr``); the corpus
preparation is named in the YAML (``prepare``).

    python train.py hparams/mini_teacher.yaml --output_folder=results/teacher
    python train.py hparams/mini_mamba.yaml --teacher_folder=results/teacher \\
        --output_folder=results/mini_mamba_target [--guide=unguided]
"""

import sys

from speechbrain_cald.experiment import start_experiment
from speechbrain_cald.tasks.whisper_asr import train_whisper

if __name__ == "__main__":
    exp = start_experiment(sys.argv[1:])
    train_whisper(exp, exp.hparams["prepare"])
