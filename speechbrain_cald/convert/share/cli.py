"""``python -m speechbrain_cald.convert.share TEACHER_DIR STUDENT_DIR --scheme residual ...``:
build a sharing student and print its size against the teacher's.
"""

from __future__ import annotations

import argparse
import json
from typing import Dict, Optional, Sequence

from speechbrain_cald.convert.share.io import SHARED_WEIGHTS_FILE, save_shared_student
from speechbrain_cald.convert.share.sizes import encoder_parameter_count, size_report
from speechbrain_cald.convert.share.transforms import _ADAPTERS, _SHARED_INITS, SCHEMES, to_shared

__all__ = ["main"]


def _format_size(name: str, report: Dict[str, int]) -> str:
    return (
        f"{name:<8} unique params {report['unique_parameters']:>12,d}   "
        f"on disk {report['disk_bytes'] / 2**20:9.2f} MiB"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m speechbrain_cald.convert.share TEACHER_DIR STUDENT_DIR --scheme residual ...``.

    Loads a teacher from a local directory (``convert.load_teacher``: transformers
    or SpeechBrain), builds the student, prints unique parameters and on-disk
    size before and after, and writes the student with :func:`save_shared_student`.

    Arguments
    ---------
    argv : sequence of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    from speechbrain_cald.convert.io import load_teacher

    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_cald.convert.share", description=main.__doc__.split("\n")[0]
    )
    parser.add_argument("teacher_dir")
    parser.add_argument("student_dir", nargs="?", default=None)
    parser.add_argument("--scheme", choices=sorted(SCHEMES), default="residual")
    parser.add_argument("--family", default=None)
    parser.add_argument("--group-size", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--no-diagonal", action="store_true")
    parser.add_argument(
        "--extra-sites", nargs="*", default=[], help="residual: more modules to share (convolution_module)"
    )
    parser.add_argument("--num-unique", type=int, default=1)
    parser.add_argument("--num-steps", type=int, default=None)
    parser.add_argument("--tying", choices=["cycle", "block"], default="cycle")
    parser.add_argument("--init", choices=list(_SHARED_INITS), default="average")
    parser.add_argument("--adapter", choices=list(_ADAPTERS), default="bottleneck")
    parser.add_argument("--adapter-dim", type=int, default=48)
    parser.add_argument("--lora-rank", type=int, default=8)
    args = parser.parse_args(argv)

    teacher = load_teacher(args.teacher_dir)
    if args.scheme == "residual":
        options = {
            "group_size": args.group_size,
            "rank": args.rank,
            "diagonal": not args.no_diagonal,
            "extra_sites": list(args.extra_sites),
        }
    else:
        options = {
            "num_unique": args.num_unique,
            "num_steps": args.num_steps,
            "tying": args.tying,
            "init": args.init,
            "adapter": args.adapter,
            "adapter_dim": args.adapter_dim,
            "lora_rank": args.lora_rank,
        }
    student = to_shared(teacher, args.scheme, family=args.family, **options)
    before, after = size_report(teacher), size_report(student)
    enc_before, enc_after = encoder_parameter_count(teacher), encoder_parameter_count(student)
    print(f"scheme {args.scheme} ({student.cald_sharing['family']}): {json.dumps(options)}")
    print(_format_size("teacher", before) + f"   encoder layers {enc_before:>12,d}")
    print(_format_size("student", after) + f"   encoder layers {enc_after:>12,d}")
    print(
        "student / teacher unique parameters: "
        f"{after['unique_parameters'] / before['unique_parameters']:.3f} "
        f"(encoder layers {enc_after / enc_before:.3f})"
    )
    if args.student_dir:
        out = save_shared_student(student, args.student_dir)
        size = (out / SHARED_WEIGHTS_FILE).stat().st_size
        print(f"wrote {out} ({SHARED_WEIGHTS_FILE} {size / 2**20:.2f} MiB, each shared tensor once)")
    return 0
