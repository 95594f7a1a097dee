"""Parts of every RESULTS.md: the machine, stage timings, the commands that made it, model sizes."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from speechbrain_cald.bench.asr_speed import plot_speed, run_isolated, speed_table
from speechbrain_cald.files import atomic_write

__all__ = [
    "add_report_arguments",
    "bench_exported_encoders",
    "count_params",
    "machine",
    "model_size",
    "model_table",
    "parse_pairs",
    "parse_report_arguments",
    "read_stage_times",
    "report_tail",
    "results_header",
    "speed_section",
    "stage_commands",
    "stage_time_lines",
    "write_results",
]


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


def results_header(title: str, method: str) -> List[str]:
    """RESULTS.md's first lines: the title, when and where it was measured, a loaded-machine warning, ``method``."""
    lines = [f"# {title}: results\n",
             f"Measured {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} on {machine()}."]
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        lines.append(f"**Loaded machine** (load average {load:.1f} on {os.cpu_count()} cores): the timings below "
                     "are not results; re-run on a quiet machine.\n")
    return lines + [method]


def model_size(model: nn.Module, folder: str) -> Dict[str, float]:
    """Parameters of the encoder layers (what a student changes) and of the whole model, and ``model.ckpt``'s MB."""
    return dict(layers=count_params(model.encoder.model.encoder), total=count_params(model),
                ckpt_mb=os.path.getsize(os.path.join(folder, "model.ckpt")) / 2**20)


def model_table(
    sizes: Dict[str, Dict[str, float]], columns: Sequence[str], cells: Dict[str, Sequence[str]]
) -> List[str]:
    """A markdown table, one row per model (the first is the reference): sizes, then ``cells`` under ``columns``.

    Example
    -------
    >>> sizes = {"teacher": dict(layers=4e6, total=5e6, ckpt_mb=20.0),
    ...          "student": dict(layers=1e6, total=2e6, ckpt_mb=8.0)}
    >>> print("\\n".join(model_table(sizes, ["test"], {"teacher": ["9.1"], "student": ["9.9"]})))
    | model | encoder layers: params | all params | model.ckpt | test |
    |---|---:|---:|---:|---:|
    | teacher | 4.00 M | 5.00 M | 20.0 MB | 9.1 |
    | student | 1.00 M (25%) | 2.00 M | 8.0 MB | 9.9 |
    """
    ref = next(iter(sizes))
    lines = ["| model | encoder layers: params | all params | model.ckpt | " + " | ".join(columns) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(columns)]
    for name, size in sizes.items():
        share = f" ({100 * size['layers'] / sizes[ref]['layers']:.0f}%)" if name != ref else ""
        lines.append(f"| {name} | {size['layers'] / 1e6:.2f} M{share} | {size['total'] / 1e6:.2f} M | "
                     f"{size['ckpt_mb']:.1f} MB | " + " | ".join(cells[name]) + " |")
    return lines


def write_results(path: str, text: str) -> None:
    """Write RESULTS.md atomically (a reader never sees half a file)."""
    with atomic_write(path) as f:
        f.write(text)


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


def parse_pairs(items: Sequence[str], what: str) -> Dict[str, str]:
    """``["name=value", ...]`` -> dict (order kept); a usage error naming ``what`` otherwise.

    Example
    -------
    >>> parse_pairs(["teacher=results/teacher", "test=data/test.csv"], "--models")
    {'teacher': 'results/teacher', 'test': 'data/test.csv'}
    """
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"{what}: expected name=value, got '{item}'")
        key, value = item.split("=", 1)
        out[key] = value
    return out


def add_report_arguments(parser: argparse.ArgumentParser, title: str) -> argparse.ArgumentParser:
    """The options every stage-4 evaluation shares: models, data, splits, speed bench, RESULTS.md and its context."""
    p = parser
    p.add_argument("--exp", required=True, help="the experiment folder (commands.sh, stage_times.tsv)")
    p.add_argument("--models", nargs="+", required=True, help="name=folder ...; the first is the reference (teacher)")
    p.add_argument("--data_root", required=True, help="what $data_root stands for in the manifests (--data_folder)")
    p.add_argument("--sets", nargs="+", required=True, help="split=manifest.csv ... (evaluation splits)")
    p.add_argument("--batch_seconds", type=float, default=120.0, help="padded audio seconds per batch")
    p.add_argument("--bench_seconds", type=float, nargs="*", default=[10, 30, 60, 120, 240])
    p.add_argument("--bench_repeats", type=int, default=3)
    p.add_argument("--results_md", required=True)
    p.add_argument("--title", default=title)
    p.add_argument("--stage_times", default="")
    p.add_argument("--command", default="", help="the command line shown in RESULTS.md")
    p.add_argument("--repo_root", default="", help="shown relative in the logged commands")
    return p


def parse_report_arguments(
    parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None
) -> Tuple[argparse.Namespace, Dict[str, str], Dict[str, str]]:
    """A stage-4 command line (``add_report_arguments``'s options): ``(args, models, sets)``, the last two as dicts."""
    args = parser.parse_args(argv)
    return args, parse_pairs(args.models, "--models"), parse_pairs(args.sets, "--sets")


def report_tail(args: argparse.Namespace, eval_seconds: float) -> List[str]:
    """RESULTS.md's last sections: stage timings, the command line and what run.sh ran."""
    return ["## Stage timings\n", "\n".join(stage_time_lines(read_stage_times(args.stage_times), eval_seconds)), "",
            "## Commands\n", "```", args.command or " ".join(sys.argv), "```",
            "What run.sh ran, in order (its `commands.sh`):", "```",
            stage_commands(args.exp, args.repo_root or None), "```", ""]


# times the encoder layers of any exported folder whose model sits on an HFSpeechEncoder
SPEED_FACTORY = "speechbrain_cald.bench.asr_speed:encoder_asr_factory"


def bench_exported_encoders(args: argparse.Namespace, models: Dict[str, str]) -> Tuple[Dict[str, list], Optional[str]]:
    """Encoder time and memory vs length of each model's ``inference/`` folder (own process each), and the plot.

    Returns ``(rows per model, path of speed_vs_length.png beside --results_md)``; nothing
    when ``--bench_seconds`` is empty.
    """
    speed: Dict[str, list] = {}
    for name, folder in models.items() if args.bench_seconds else ():
        speed[name] = run_isolated(SPEED_FACTORY, os.path.join(folder, "inference"), args.bench_seconds, args.bench_repeats)
        print(f"{name:24s} encoder ms: " + "  ".join(f"{r['seconds']:g}s {r['ms']:.0f}" for r in speed[name]), flush=True)
    md_dir = os.path.dirname(os.path.abspath(args.results_md))
    os.makedirs(md_dir, exist_ok=True)
    png = plot_speed(speed, os.path.join(md_dir, "speed_vs_length.png")) if speed else None
    return speed, png


def speed_section(speed: Dict[str, list], png: Optional[str]) -> List[str]:
    """RESULTS.md's speed and memory section (empty without measurements)."""
    if not speed:
        return []
    return ["## Encoder time (median ms) and peak memory rise (MB) vs audio length\n",
            "On the CPU, batch 1, no grad, the transformer / linear-time layers only (the CNN feature encoder "
            "and projection computed beforehand), random audio; each model in its own process.\n",
            speed_table(speed), "", f"![encoder time vs audio length]({os.path.basename(png)})", ""]
