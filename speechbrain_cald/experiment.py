"""The start and the end of every recipe's ``train.py``, the SpeechBrain way.

``start_experiment(argv)`` parses ``train.py hparams.yaml --key=value ...``,
initialises DDP when the script runs under ``torchrun`` (SpeechBrain's
``ddp_init_group``), loads the YAML with the overrides and creates the output
folder (with the resolved ``hyperparams.yaml``, as SpeechBrain does).
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

import dataclasses
import os
from typing import Any, Dict, List, Optional

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import ddp_barrier, ddp_init_group, if_main_process

from speechbrain_cald.distill.taps import unwrap

__all__ = ["Experiment", "export_model", "start_experiment"]


@dataclasses.dataclass
class Experiment:
    """What ``start_experiment`` found: the YAML loaded and SpeechBrain's run options."""

    hparams: Dict[str, Any]
    run_opts: Dict[str, Any]
    hparams_file: str
    overrides: str


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
    >>> exp.hparams["lr"], os.path.exists(f"{d}/out/hyperparams.yaml")
    (0.5, True)
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    ddp_init_group(run_opts)  # a no-op unless launched by torchrun
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    if "output_folder" not in hparams:
        raise KeyError(f"{hparams_file}: the YAML needs `output_folder` (where this run writes)")
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    return Experiment(hparams, run_opts, hparams_file, overrides)


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
    if brain.checkpointer is not None:
        brain.checkpointer.recover_if_possible(min_key=min_key, max_key=max_key)
    export = os.path.join(output_folder, "model.ckpt")
    if if_main_process():
        state = unwrap(brain.modules[module]).state_dict()
        torch.save(state, export + ".tmp")
        os.replace(export + ".tmp", export)
        print(f"best model ({min_key or max_key or 'last checkpoint'}) -> {export}")
    ddp_barrier()
    return export
