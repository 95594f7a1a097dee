"""A sharing student's folder: the teacher's architecture, ``cald_sharing.json`` (the sharing
record) and the weights, each shared tensor once; ``load_shared_student`` rebuilds it
without the teacher's weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional

from torch import nn

from speechbrain_cald.convert.share.transforms import apply_sharing_record
from speechbrain_cald.convert.share.weights import load_shared_weights, save_shared_weights

__all__ = ["SHARED_WEIGHTS_FILE", "SHARING_FILE", "load_shared_student", "save_shared_student"]


SHARING_FILE = "cald_sharing.json"
SHARED_WEIGHTS_FILE = "model.safetensors"


def save_shared_student(
    model: nn.Module, directory: os.PathLike, hparams: Optional[Dict[str, object]] = None
) -> Path:
    """Save a parameter-sharing student so :func:`load_shared_student` rebuilds it.

    Layout: the teacher architecture (transformers ``config.json`` or SpeechBrain
    ``hparams.json``, as ``convert.io`` writes them), ``cald_sharing.json`` (the
    sharing record, the teacher class and, for a linear-time student, its
    ``cald_conversion``) and ``model.safetensors`` holding each shared tensor once.

    Arguments
    ---------
    model : nn.Module
        A student from :func:`to_shared`.
    directory : path-like
        Created if missing.
    hparams : dict, optional
        SpeechBrain models only: constructor keyword arguments, unless the
        teacher came from ``convert.load_teacher`` (which records them).

    Returns
    -------
    pathlib.Path
        The directory.
    """
    from speechbrain_cald.convert import io as convert_io
    from speechbrain_cald.convert.families import FAMILIES

    record = getattr(model, "cald_sharing", None)
    if record is None:
        raise ValueError(
            f"{type(model).__name__} has no cald_sharing record: save_shared_student expects a "
            "student made by speechbrain_cald.convert.share.to_shared"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    family = FAMILIES[record["family"]]
    if family.save_format == "hf":
        model.config.save_pretrained(directory)
    else:
        hparams = convert_io.speechbrain_hparams(model, hparams, f"save_shared_student({directory})")
        convert_io.write_speechbrain_hparams(model, directory, hparams)
    meta = {
        "sharing": record,
        "teacher_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "conversion": getattr(model, "cald_conversion", None),
    }
    convert_io._write_json(directory / SHARING_FILE, meta)  # atomic, like the other student files
    save_shared_weights(model, directory / SHARED_WEIGHTS_FILE)
    return directory


def load_shared_student(directory: os.PathLike) -> nn.Module:
    """Rebuild a student written by :func:`save_shared_student` (no teacher weights needed).

    Arguments
    ---------
    directory : path-like
        Local directory with ``cald_sharing.json``.

    Returns
    -------
    nn.Module
        The student in eval mode, with ``cald_sharing`` (and ``cald_conversion``).
    """
    from speechbrain_cald.convert import class_names
    from speechbrain_cald.convert import io as convert_io
    from speechbrain_cald.convert.linear_time import convert_in_place
    from speechbrain_cald.pretrained import local_source

    directory = local_source(directory, "student")
    path = directory / SHARING_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: expected a student directory written by "
            "speechbrain_cald.convert.share.save_shared_student"
        )
    meta = json.loads(path.read_text())
    if (directory / "config.json").is_file():
        import transformers

        config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
        model = class_names.model_class(meta.get("teacher_class"), f"{path}: key 'teacher_class'")(config)
        hparams = None
    else:
        hparams = json.loads((directory / convert_io.HPARAMS_FILE).read_text())
        model = convert_io.build_speechbrain_model(hparams, directory / convert_io.HPARAMS_FILE)
    conversion = meta.get("conversion")
    if conversion:
        mixer = class_names.recorded_mixer(conversion.get("mixer"), f"{path}: key 'conversion.mixer'")
        convert_in_place(
            model, mixer, "default", conversion["family"], conversion["teacher_class"],
            **conversion["mixer_options"],
        )
    student = apply_sharing_record(model, meta["sharing"])
    load_shared_weights(student, directory / SHARED_WEIGHTS_FILE)
    if hparams is not None:
        student.cald_hparams = convert_io._decode(hparams, directory / convert_io.HPARAMS_FILE)
    return student.eval()
