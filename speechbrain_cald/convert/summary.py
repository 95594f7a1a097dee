"""Readable tables of what a conversion did (used by the command line)."""

from __future__ import annotations

import textwrap
from typing import List, Sequence

from torch import nn

from speechbrain_cald.convert.families.base import get_path
from speechbrain_cald.convert.linear_time import count_parameters

__all__ = ["format_table", "conversion_summary"]


def format_table(header: Sequence[str], rows: List[Sequence[object]]) -> str:
    """Left-aligned text table.

    Example
    -------
    >>> print(format_table(["a", "bb"], [[1, 2], [300, 4]]))
    a    bb
    ---  --
    1    2
    300  4
    """
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _count(module: nn.Module) -> int:
    return count_parameters(module)


def conversion_summary(teacher: nn.Module, student: nn.Module) -> str:
    """Parameter counts before / after and one row per replaced module."""
    record = student.cald_conversion
    rows = []
    removed = added = 0
    for entry in record["replaced"]:
        before = _count(get_path(teacher, entry["module"]))
        wrapper = get_path(student, entry["module"])
        after = _count(wrapper)
        removed += before
        added += after
        rows.append(
            [
                entry["module"],
                entry["attention"],
                type(getattr(wrapper, "mixer", wrapper)).__name__,
                f"{before:,}",
                f"{after:,}",
                "; ".join(entry["init"]) or "default",
            ]
        )
    n_teacher, n_student = count_parameters(teacher), count_parameters(student)
    totals = format_table(
        ["", "parameters"],
        [
            ["teacher", f"{n_teacher:,}"],
            ["student", f"{n_student:,}"],
            ["kept (copied exactly)", f"{n_teacher - removed:,}"],
            ["attention removed", f"{removed:,}"],
            ["mixers added", f"{added:,}"],
        ],
    )
    modules = format_table(["replaced module", "attention", "mixer", "params before", "params after", "init"], rows)
    options = ", ".join(f"{k}={v}" for k, v in sorted(record["mixer_options"].items()))
    head = (
        f"family {record['family']}, teacher {record['teacher_class'].rsplit('.', 1)[-1]}, "
        f"mixer {record['mixer']}, init {record['init']}\n"
        + textwrap.fill(f"mixer options: {options}", width=100, subsequent_indent="  ")
    )
    return f"{head}\n\n{totals}\n\n{modules}"
