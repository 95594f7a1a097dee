"""Command line: convert a local teacher into a linear-time student and save it.

Usage::

    python -m speechbrain_cald.convert TEACHER_DIR STUDENT_DIR --mixer bimamba2 \\
        [--mixer-option d_state=128 --mixer-option expand=1 ...] [--init attention] \\
        [--model-class Wav2Vec2ForCTC] [--family wav2vec2] [--overwrite]

Prints parameter counts before / after and the table of replaced modules, then
writes the student with ``save_student`` (reload with ``load_student``).
``--list-families`` prints the supported families. It refuses to write into the
teacher's folder (or inside it) and into a folder that holds a model already
(``--overwrite`` replaces it); ``load_teacher`` refuses a converted student and
weights that do not fit the config.
Option values are JSON when they parse (``256``, ``true``, ``[0, 1]``), else strings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

from speechbrain_cald.convert.io import load_teacher, save_student
from speechbrain_cald.convert.linear_time import INITS, to_linear_time
from speechbrain_cald.convert.families import FAMILIES
from speechbrain_cald.nnet import MIXERS
from speechbrain_cald.convert.summary import conversion_summary, format_table


def parse_options(items: List[str]) -> Dict[str, Any]:
    """``["k=256", "share=kv"]`` -> ``{"k": 256, "share": "kv"}``.

    Example
    -------
    >>> parse_options(["k=256", "share=kv", "dt_limit=[0.0, 1.0]"])
    {'k': 256, 'share': 'kv', 'dt_limit': [0.0, 1.0]}
    """
    options: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--mixer-option: expected KEY=VALUE, found '{item}'")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_cald.convert",
        description="Replace every self-attention of a local pretrained teacher by a "
        "linear-time mixer and save the student.",
    )
    parser.add_argument("teacher_dir", nargs="?", help="local teacher directory (save_pretrained, or SpeechBrain hparams.json + model.ckpt)")
    parser.add_argument("student_dir", nargs="?", help="where to write the student")
    parser.add_argument("--list-families", action="store_true", help="print the supported model families and exit")
    parser.add_argument("--mixer", default="bimamba2", help=f"one of {sorted(MIXERS)} or module:Class (default bimamba2)")
    parser.add_argument("--mixer-option", action="append", default=[], metavar="KEY=VALUE",
                        help="mixer constructor option, repeatable (e.g. d_state=128, k=256, share=kv)")
    parser.add_argument("--init", choices=INITS, default="default",
                        help="'attention' initialises the mixer from the attention projections")
    parser.add_argument("--model-class", default=None, help="transformers class to load the teacher as")
    parser.add_argument("--family", default=None, help="force a family entry")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in STUDENT_DIR")
    return parser


MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "hparams.json", "model.ckpt", "model.pt",
               "cald_conversion.json")


def check_paths(teacher_dir: str, student_dir: str, overwrite: bool = False) -> None:
    """Refuse a student folder that is the teacher's, lies inside it, or already holds a model.

    Example
    -------
    >>> import tempfile; d = tempfile.mkdtemp()
    >>> check_paths(d, d)
    Traceback (most recent call last):
    ...
    SystemExit: STUDENT_DIR is TEACHER_DIR (...): the student would overwrite the teacher; choose another folder
    """
    teacher, student = os.path.realpath(teacher_dir), os.path.realpath(student_dir)
    if student == teacher:
        raise SystemExit(f"STUDENT_DIR is TEACHER_DIR ({teacher}): the student would overwrite the teacher; "
                         "choose another folder")
    if student.startswith(teacher + os.sep):
        raise SystemExit(f"STUDENT_DIR {student} lies inside TEACHER_DIR {teacher}: choose a folder outside the "
                         "teacher's")
    present = [name for name in MODEL_FILES if os.path.exists(os.path.join(student, name))]
    if present and not overwrite:
        raise SystemExit(f"STUDENT_DIR {student} already holds a model ({', '.join(present)}): choose an empty "
                         "folder, or pass --overwrite to replace it")


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_families:
        print(format_table(["family", "what / where attention lives / mask"],
                           [[f.name, f.description] for f in FAMILIES.values()]))
        return 0
    if args.teacher_dir is None or args.student_dir is None:
        parser.error("TEACHER_DIR and STUDENT_DIR are required (or --list-families)")
    check_paths(args.teacher_dir, args.student_dir, args.overwrite)
    teacher = load_teacher(args.teacher_dir, model_class=args.model_class)
    student = to_linear_time(
        teacher, args.mixer, init=args.init, family=args.family, mixer_options=parse_options(args.mixer_option)
    )
    print(conversion_summary(teacher, student))
    directory = save_student(student, args.student_dir)
    print(f"\nstudent written to {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
