"""Teacher snapshots ("waypoints"): saved while fine-tuning the transformer.

A snapshot is the model's ``state_dict`` after ``step`` optimizer steps, in
``<snapshot_dir>/step_<step:08d>.ckpt``. Files are written to a hidden
temporary name and renamed into place, so a killed run never leaves a
half-written snapshot that the waypoint guide could pick up.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Dict, List, Tuple, Union

import torch
from torch import nn
from speechbrain_cald.files import atomic_target

__all__ = ["list_snapshots", "save_snapshot", "snapshot_path"]

_NAME = re.compile(r"^step_(\d+)\.ckpt$")


def snapshot_path(snapshot_dir: Union[str, os.PathLike], step: int) -> pathlib.Path:
    """Where the snapshot of ``step`` lives.

    Example
    -------
    >>> snapshot_path("/tmp/w", 12).name
    'step_00000012.ckpt'
    """
    return pathlib.Path(snapshot_dir) / f"step_{step:08d}.ckpt"


def save_snapshot(model: nn.Module, snapshot_dir: Union[str, os.PathLike], step: int) -> pathlib.Path:
    """Atomically save ``model.state_dict()`` as the snapshot of ``step``.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> p = save_snapshot(nn.Linear(2, 2), d, 3)
    >>> [s for s, _ in list_snapshots(d)]
    [3]
    """
    path = snapshot_path(snapshot_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(str(path)) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    return path


def list_snapshots(snapshot_dir: Union[str, os.PathLike]) -> List[Tuple[int, pathlib.Path]]:
    """``[(step, path), ...]`` of the snapshots in ``snapshot_dir``, by step.

    Raises
    ------
    FileNotFoundError
        If the directory does not exist or holds no ``step_*.ckpt`` file.
    """
    directory = pathlib.Path(snapshot_dir)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"snapshot_dir '{directory}' does not exist: expected the folder where teacher "
            "fine-tuning wrote its snapshots (hparams `snapshot_dir`, `snapshot_interval`)"
        )
    found: Dict[int, pathlib.Path] = {}
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            found[int(match.group(1))] = path
    if not found:
        raise FileNotFoundError(
            f"snapshot_dir '{directory}' holds no step_*.ckpt snapshot: run teacher "
            "fine-tuning with snapshot_interval > 0 first"
        )
    return sorted(found.items())
