"""Parts of every RESULTS.md: the machine, stage timings, the commands that made it, model sizes."""

from __future__ import annotations

import os
import platform
from typing import Dict, List, Optional

import torch
from torch import nn

__all__ = ["count_params", "machine", "read_stage_times", "stage_commands", "stage_time_lines"]


def count_params(module: nn.Module) -> int:
    """Unique parameters: a tensor shared by several layers counts once (``parameters()`` deduplicates).

    Example
    -------
    >>> count_params(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in module.parameters())


def machine() -> str:
    """CPU model, cores, torch / SpeechBrain versions, threads and the load average now (timings' context)."""
    import speechbrain as sb

    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"speechbrain {sb.__version__}; load average at evaluation {load}")


def read_stage_times(path: Optional[str]) -> Dict[str, float]:
    """Latest time (s) of each ``N<TAB>title`` in run.sh's ``stage_times.tsv``."""
    times: Dict[str, float] = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 3:
                    times[f"{parts[0]}\t{parts[1]}"] = float(parts[2])
    return times


def stage_time_lines(times: Dict[str, float], eval_seconds: float) -> List[str]:
    """A markdown table of stage times, this evaluation's and the total."""
    lines = ["| stage | seconds |", "|---|---:|"] + [f"| {k.replace(chr(9), ': ', 1)} | {v:.0f} |" for k, v in times.items()]
    total = sum(v for k, v in times.items() if not k.startswith("4\t")) + eval_seconds
    lines.append(f"| 4: evaluation (this run) | {eval_seconds:.0f} |")
    lines.append(f"| **total** | **{total:.0f}** ({total / 60:.1f} min) |")
    return lines


def stage_commands(exp_folder: str, root: Optional[str] = None) -> str:
    """The distinct commands run.sh logged in ``<exp_folder>/commands.sh`` (``root`` shown relative)."""
    path = os.path.join(exp_folder, "commands.sh")
    if not os.path.exists(path):
        return "(no commands.sh in the experiment folder: stages were run by hand)"
    prefix = (os.path.abspath(root) + os.sep) if root else None
    lines: List[str] = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if prefix:
                line = line.replace(prefix, "")
            if line and line not in lines:
                lines.append(line)
    return "\n".join(lines)
