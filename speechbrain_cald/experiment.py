"""The start and the end of every recipe's ``train.py``, the SpeechBrain way.

``start_experiment(argv)`` parses ``train.py hparams.yaml --key=value ...``,
initialises DDP when the script runs under ``torchrun`` (SpeechBrain's
``ddp_init_group``), loads the YAML with the overrides and creates the output
folder (SpeechBrain's log and environment description). Before anything is
written there it makes sure the run can finish:

- every override of a number or a boolean is one (``--lr=abc`` is an error
  naming the key, the YAML and its default, not a crash inside AdamW later);
- the output folder is this run's alone: a lock (``.cald_run.lock``, held with
  ``flock`` for the life of the process, so a killed run's lock goes with it)
  makes a second run into the same folder stop at once, naming the folder and
  the run that holds it;
- the output and save folders can be written (a read-only ``save/`` would
  otherwise fail at the first checkpoint, after an epoch's work);
- a folder that holds a run's record (``hyperparams.yaml``) is rerun only with
  the options it was trained with, but for what a resume may change
  (``options_record.check_rerun``), unless ``--overwrite`` is given: then the
  earlier run's checkpoints and model go when this one starts training.
The record itself (``hyperparams.yaml``, the resolved YAML as SpeechBrain
writes it) is written when training starts (``distill.run_safety.training_starts``):
a run refused or failed before that leaves a finished folder as it was.
Overrides are read by ``speechbrain_cald.overrides.parse_arguments``: a path is
data, whatever its characters (``#``, ``:``, ``=``, quotes).
``export_model(brain, output_folder)`` writes the best checkpoint's model as
``<output_folder>/model.ckpt`` (atomically, on the main process only): what
the next stage (students, evaluation) reads.

A recipe's ``train.py`` is then::

    exp = start_experiment(sys.argv[1:])
    run_on_main(prepare_corpus, kwargs={...})   # speechbrain.utils.distributed
    ... datasets, Brain(modules=build_modules(exp.hparams), ...) .fit(...)
    export_model(brain, exp.hparams["output_folder"], min_key="WER")
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import fcntl
import json
import os
import socket
import sys
import tempfile
from typing import IO, Any, Dict, List, Mapping, Optional

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast, ddp_init_group, if_main_process

from speechbrain_cald.distill.run_safety import at_training_start, training_starts
from speechbrain_cald.distill.taps import unwrap
from speechbrain_cald.files import FolderNotWritable, atomic_target, check_writable, not_writable
from speechbrain_cald.options_record import OptionsDiffer, check_rerun, clear_earlier_run, write_record
from speechbrain_cald.overrides import parse_arguments

__all__ = [
    "Experiment",
    "FolderNotWritable",
    "OutputFolderInUse",
    "check_override_types",
    "check_writable",
    "export_model",
    "init_distributed",
    "lock_output_folder",
    "start_experiment",
]

LOCK_NAME = ".cald_run.lock"


@dataclasses.dataclass
class Experiment:
    """What ``start_experiment`` found: the YAML loaded and SpeechBrain's run options."""

    hparams: Dict[str, Any]
    run_opts: Dict[str, Any]
    hparams_file: str
    overrides: str
    lock: Optional[IO] = None  # the output folder's lock, held while this object lives (main process)


def start_experiment(argv: List[str]) -> Experiment:
    """Parse the command line, initialise DDP, load the YAML, create the output folder.

    Arguments
    ---------
    argv : list of str
        ``[hparams.yaml, --key=value, ...]`` (``sys.argv[1:]``); SpeechBrain's
        run options (``--device``, ``--precision``, ``--data_parallel_backend``...)
        are recognised, every other ``--key=value`` overrides a YAML key.

    Returns
    -------
    Experiment

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> yaml = os.path.join(d, "hp.yaml")
    >>> with open(yaml, "w") as f:
    ...     _ = f.write("output_folder: !PLACEHOLDER\\nlr: 0.1\\n")
    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):  # SpeechBrain's start-up log lines
    ...     exp = start_experiment([yaml, f"--output_folder={d}/out", "--lr=0.5"])
    >>> exp.hparams["lr"], os.path.exists(f"{d}/out/hyperparams.yaml")  # the record waits for training
    (0.5, False)
    >>> training_starts(); os.path.exists(f"{d}/out/hyperparams.yaml")
    True
    """
    overwrite, argv = _take_overwrite(argv)
    hparams_file, run_opts, overrides = parse_arguments(argv)
    run_opts = init_distributed(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    check_override_types(hparams_file, overrides, hparams)
    if "output_folder" not in hparams:
        raise KeyError(f"{hparams_file}: the YAML needs `output_folder` (where this run writes)")
    output_folder = hparams["output_folder"]
    lock, error = None, None
    if if_main_process():  # one lock per run: the main process holds it for all ranks
        try:
            lock = lock_output_folder(output_folder, command=" ".join([os.path.basename(sys.argv[0]), *argv]))
            if not overwrite:
                check_rerun(output_folder, hparams_file, overrides)
            check_writable(_run_folders(hparams))
        except (OutputFolderInUse, OptionsDiffer, PermissionError) as err:
            error = err
    error = ddp_broadcast(error, src=0)
    if isinstance(error, FolderNotWritable):  # a user's setting, not a bug: the message, no traceback
        raise SystemExit(f"error: {error}")
    if error is not None:
        raise error
    sb.create_experiment_directory(experiment_directory=output_folder)  # the log; the record waits for training
    at_training_start("options record", lambda: _record_options(hparams, hparams_file, overrides, overwrite))
    return Experiment(hparams, run_opts, hparams_file, overrides, lock)


def _take_overwrite(argv: List[str]):
    """``(overwrite, argv without it)``: ``--overwrite`` / ``--overwrite=True|False`` of train.py."""
    flags = [a for a in argv if a == "--overwrite" or a.startswith("--overwrite=")]
    values = [a.partition("=")[2] or "True" for a in flags]
    for value in values:
        if value not in ("True", "true", "False", "false"):
            raise ValueError(f"--overwrite takes True or False (got '{value}')")
    overwrite = bool(values) and values[-1] in ("True", "true")
    return overwrite, [a for a in argv if a not in flags]


def _record_options(hparams: Mapping[str, Any], hparams_file: str, overrides: str, overwrite: bool) -> None:
    """At the start of training (main process): ``--overwrite`` clears the earlier run, then the record."""
    if not if_main_process():
        return
    if overwrite:
        clear_earlier_run(hparams)
    write_record(hparams["output_folder"], hparams_file, overrides)


def init_distributed(run_opts):
    """SpeechBrain's ``ddp_init_group`` (a no-op unless launched by ``torchrun``), closed at exit.

    On a CPU machine the backend becomes gloo unless one was chosen. The
    process group is destroyed when the interpreter exits: a gloo group left
    to the interpreter's teardown can abort a rank at exit ("terminate called
    without an active exception", SIGABRT) after all its work is done, which
    torchrun then reports as a failed run.

    Arguments
    ---------
    run_opts : dict or RunOptions
        SpeechBrain's run options (``sb.parse_arguments``).

    Returns
    -------
    The run options, with the backend chosen.

    Example
    -------
    >>> opts = init_distributed({"device": "cpu", "distributed_backend": "nccl"})  # not under torchrun
    >>> opts["distributed_backend"], torch.distributed.is_initialized()
    ('nccl', False)
    """
    run_opts = _cpu_backend(run_opts)
    ddp_init_group(run_opts)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        atexit.register(_close_process_group)
    return run_opts


def _close_process_group():
    if not torch.distributed.is_initialized():
        return
    # every rank done before any tears its sockets down (a gloo rank aborted in teardown
    # once more in a fresh clone's test run with the destroy alone); bounded, so a rank
    # that died does not keep the others at exit
    try:
        if torch.distributed.get_backend() == "gloo":
            torch.distributed.monitored_barrier(timeout=datetime.timedelta(seconds=60))
        else:
            torch.distributed.barrier()
    except Exception:  # a rank that died or timed out: tear down anyway
        pass
    torch.distributed.destroy_process_group()


def _cpu_backend(run_opts):
    """Under torchrun without CUDA (or with ``--device=cpu``), gloo unless a backend was chosen.

    SpeechBrain's default backend, nccl, needs a GPU per process and stops with
    "Not enough GPUs available!" on a CPU machine.
    """
    chosen = "distributed_backend" in (getattr(run_opts, "overridden_args", None) or set())
    device = run_opts["device"] or ""
    on_cpu = device.startswith("cpu") or (not device and not torch.cuda.is_available())
    if chosen or not on_cpu or run_opts["distributed_backend"] == "gloo" or "LOCAL_RANK" not in os.environ:
        return run_opts
    print("torchrun on CPU: distributed_backend gloo (pass --distributed_backend to choose another)")
    if dataclasses.is_dataclass(run_opts):  # SpeechBrain's Brain reads only the options marked as given
        given = set(run_opts.overridden_args) | {"distributed_backend"}
        return dataclasses.replace(run_opts, distributed_backend="gloo", overridden_args=given)
    return {**run_opts, "distributed_backend": "gloo"}


# ------------------------------------------------------------------ typed overrides
def _yaml_defaults(hparams_file: str) -> Dict[str, Any]:
    """Top-level plain scalars of a hyperpyyaml file (tagged values, e.g. ``!ref``, left out)."""
    with open(hparams_file, encoding="utf-8") as f:
        data = YAML(typ="rt").load(f) or {}
    return {k: v for k, v in data.items() if isinstance(v, (bool, int, float, str)) and not hasattr(v, "tag")}


def _kind(value: Any) -> Optional[str]:
    if isinstance(value, bool):
        return "a boolean (True or False)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return None


def check_override_types(hparams_file: str, overrides: str, hparams: Mapping[str, Any]) -> None:
    """Every ``--key=value`` overriding a number or a boolean of the YAML must be one.

    Arguments
    ---------
    hparams_file : str
        The YAML, for its defaults.
    overrides : str
        SpeechBrain's overrides (YAML text, ``"lr: abc\\n..."``).
    hparams : dict
        The loaded hparams (the values the overrides became).

    Raises
    ------
    TypeError
        Naming every override of the wrong kind, with the YAML's default.

    Example
    -------
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "hp.yaml")
    >>> with open(p, "w") as f:
    ...     _ = f.write("lr: 0.001\\nepochs: 2\\nname: x\\n")
    >>> check_override_types(p, "lr: 1\\nname: 3", {"lr": 1, "epochs": 2, "name": 3})
    >>> check_override_types(p, "lr: abc\\nepochs: 2.5", {"lr": "abc", "epochs": 2.5, "name": "x"})
    Traceback (most recent call last):
    ...
    TypeError: hparams overrides of the wrong kind (nothing was run): --lr=abc: `lr` is a number in hp.yaml (default 0.001), got 'abc'; --epochs=2.5: `epochs` is an integer in hp.yaml (default 2), got 2.5
    """
    if not overrides:
        return
    given = YAML(typ="safe").load(overrides) or {}
    defaults = _yaml_defaults(hparams_file)
    wrong = []
    for key in given:
        if key not in defaults or key not in hparams:
            continue
        want, value = _kind(defaults[key]), hparams[key]
        if want is None:
            continue
        ok = {
            "a boolean (True or False)": isinstance(value, bool),
            "an integer": isinstance(value, int) and not isinstance(value, bool),
            "a number": isinstance(value, (int, float)) and not isinstance(value, bool),
        }[want]
        if not ok:
            wrong.append(
                f"--{key}={value}: `{key}` is {want} in {os.path.basename(hparams_file)} "
                f"(default {defaults[key]}), got {value!r}"
            )
    if wrong:
        raise TypeError("hparams overrides of the wrong kind (nothing was run): " + "; ".join(wrong))


# ------------------------------------------------------------------ output folder
class OutputFolderInUse(RuntimeError):
    """Another live run holds the output folder's lock."""


_HELD_LOCKS: Dict[str, IO] = {}  # folder -> open lock file: closing it would release the lock


def lock_output_folder(folder: str, command: str = "") -> IO:
    """Take the output folder's lock for this process (``<folder>/.cald_run.lock``), or refuse.

    The lock is an ``flock`` on the file, held until the process ends (or
    the returned file is closed); the kernel drops it when the holder dies,
    so the lock of a killed run is taken over at once and safely (there is
    no stale lock to judge). The file records who holds it, for the message
    a second run gets, and is emptied when the run exits: a run that finds
    it filled takes over from one that was killed, and says so. (On NFS,
    Linux maps ``flock`` to NFS byte-range locks.)

    Arguments
    ---------
    folder : str
        The output folder (created if missing).
    command : str
        Shown to a second run.

    Returns
    -------
    file
        The open lock file (keep it; this module keeps a reference too).

    Raises
    ------
    OutputFolderInUse
        Naming the folder and the run holding it.

    Example
    -------
    >>> d = tempfile.mkdtemp()
    >>> lock = lock_output_folder(d, "train.py a.yaml")
    >>> lock_output_folder(d)  # the same process again: fine
    <...>
    """
    folder = os.path.abspath(folder)
    if folder in _HELD_LOCKS:
        return _HELD_LOCKS[folder]
    path = os.path.join(folder, LOCK_NAME)
    try:
        os.makedirs(folder, exist_ok=True)
        f = open(path, "a+", encoding="utf-8")
    except OSError as err:  # read-only, not a folder, no space: said as check_writable says it
        raise not_writable([f"output_folder {folder}: {err.strerror or err}"]) from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        try:
            info = json.loads(holder)
            who = (f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}")
        except (ValueError, KeyError):
            who = "unknown"
        raise OutputFolderInUse(
            f"output folder {folder} is in use by another run ({who}). Two runs in one folder delete each "
            "other's checkpoints: wait for that run to end, or pass another --output_folder"
        ) from None
    f.seek(0)
    previous = f.read().strip()
    if previous:
        print(f"output folder {folder}: taking over the lock of an earlier run that is no longer running ({previous})")
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                        "started": datetime.datetime.now().isoformat(timespec="seconds")}) + "\n")
    f.flush()
    _HELD_LOCKS[folder] = f
    atexit.register(_release_lock, folder)
    return f


def _release_lock(folder: str) -> None:
    """At a run's exit (finished or failed, not killed): empty the lock file, then let it go.

    An empty file tells the next run that nobody died holding it; the record of a
    run that was killed stays, and the next run says it takes over from it.
    """
    f = _HELD_LOCKS.pop(folder, None)
    if f is None or f.closed:
        return
    try:
        f.seek(0)
        f.truncate()
        f.flush()
    except OSError:  # a folder gone or read-only by now: the kernel still drops the lock
        pass
    f.close()


def _run_folders(hparams: Mapping[str, Any]) -> Dict[str, str]:
    """The folders this run writes: ``output_folder``, ``save_folder`` and any ``*_folder`` /
    ``*_dir`` key inside the output folder (e.g. ``snapshot_dir``)."""
    out = os.path.abspath(hparams["output_folder"])
    folders = {"output_folder": out}
    for key, value in hparams.items():
        if not isinstance(value, str) or not key.endswith(("_folder", "_dir")):
            continue
        path = os.path.abspath(value)
        if key == "save_folder" or path == out or path.startswith(out + os.sep):
            folders[key] = path
    return folders


def export_model(
    brain: sb.Brain,
    output_folder: str,
    min_key: Optional[str] = None,
    max_key: Optional[str] = None,
    module: str = "model",
) -> str:
    """Write the best checkpoint's ``modules[module]`` to ``<output_folder>/model.ckpt``.

    Arguments
    ---------
    brain : speechbrain.Brain
        After ``fit``; its checkpointer keeps the candidates.
    output_folder : str
        Where ``model.ckpt`` goes.
    min_key, max_key : str, optional
        The checkpoint metric to pick the best by (e.g. ``min_key="WER"``);
        neither: the last checkpoint.
    module : str
        Which module of ``brain.modules`` to export.

    Returns
    -------
    str
        The path of ``model.ckpt``. The file appears complete or not at all
        (written aside, then renamed), and only the main process writes it;
        every process waits until it is there.
    """
    training_starts()  # a model.ckpt never goes without its record (a run that trained nothing: now)
    if brain.checkpointer is not None:
        brain.checkpointer.recover_if_possible(min_key=min_key, max_key=max_key)
    export = os.path.join(output_folder, "model.ckpt")
    if if_main_process():
        state = unwrap(brain.modules[module]).state_dict()
        with atomic_target(export) as tmp:
            torch.save(state, tmp)
        print(f"best model ({min_key or max_key or 'last checkpoint'}) -> {export}")
    ddp_barrier()
    return export
