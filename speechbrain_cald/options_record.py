"""An output folder's record of the options its model was trained with: ``hyperparams.yaml``.

SpeechBrain writes the resolved YAML into the output folder when a run
starts; stage 4 builds the model from it and loads ``model.ckpt`` into it.
Written before anything is checked, a rerun with another architecture
(``--d_state=32`` into a folder trained with 64) replaced the record of a
finished model and then failed: the folder's ``model.ckpt`` no longer loaded;
another ``--lr`` "resumed" and the folder recorded a rate it was not trained
with. So here:

- ``check_rerun`` compares a new run's options with the folder's record before
  the run writes anything, and refuses (``OptionsDiffer``, naming every
  option) when they differ in anything but what a resume may change
  (``RESUMABLE``: train longer, other loader workers, a moved folder);
- ``write_record`` writes the record (SpeechBrain's format) and is called when
  the run that owns the options starts training (``training_starts`` in
  ``distill.run_safety``), never before;
- ``clear_earlier_run`` is what ``--overwrite`` does at that moment: the
  earlier run's checkpoints and models go, so nothing resumes from them.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
from typing import Any, Dict, List, Mapping, Optional

from hyperpyyaml import resolve_references
from ruamel.yaml import YAML

from speechbrain_cald.files import atomic_write

__all__ = ["OptionsDiffer", "RECORD_NAME", "RESUMABLE", "check_rerun", "clear_earlier_run", "write_record"]

logger = logging.getLogger(__name__)

RECORD_NAME = "hyperparams.yaml"
# What a resume may change: the number of epochs (train longer), the loader's worker
# processes, whether the run only prepares (stage 1 of the ASR recipes), and where the
# folder is (a moved experiment; the paths under it follow).
RESUMABLE = ("number_of_epochs", "num_workers", "prepare_only", "output_folder")


class OptionsDiffer(ValueError):
    """A rerun's options differ from those the output folder's model was trained with."""


def _resolved(hparams_file: str, overrides: Any) -> str:
    """The YAML with ``overrides`` applied and references resolved: SpeechBrain's ``hyperparams.yaml`` body."""
    with open(hparams_file, encoding="utf-8") as f:
        return resolve_references(f, overrides).getvalue()


def _tag(node: Any) -> Optional[str]:
    return getattr(getattr(node, "tag", None), "value", None)


def _plain(node: Any) -> Any:
    """A ruamel tree as comparable Python values, tags kept (``!new:...`` names what is built)."""
    tag = _tag(node)
    if isinstance(node, dict):
        value: Any = {str(k): _plain(v) for k, v in node.items()}
    elif isinstance(node, list):
        value = [_plain(v) for v in node]
    else:
        value = getattr(node, "value", node) if tag else node
    return (tag, value) if tag else value


def _load(text: str) -> Dict[str, Any]:
    return _plain(YAML(typ="rt").load(text) or {})


def _shown(value: Any) -> str:
    return repr(value) if not isinstance(value, (dict, list, tuple)) else "(a structure)"


def check_rerun(folder: str, hparams_file: str, overrides: str) -> None:
    """Refuse a run into ``folder`` whose options differ from the folder's record (if it has one).

    Arguments
    ---------
    folder : str
        The output folder.
    hparams_file : str
        The run's YAML.
    overrides : str
        The run's overrides (YAML text, ``speechbrain_cald.overrides.parse_arguments``).

    Raises
    ------
    OptionsDiffer
        Naming every option that differs, the recorded value and the new one.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp(); hp = os.path.join(d, "hp.yaml")
    >>> with open(hp, "w") as f:
    ...     _ = f.write("output_folder: !PLACEHOLDER\\nlr: 0.1\\nnumber_of_epochs: 1\\nd: 4\\nsize: !ref <d> * 2\\n")
    >>> out = os.path.join(d, "out")
    >>> write_record(out, hp, f"output_folder: {out}")
    >>> check_rerun(out, hp, f"output_folder: {out}\\nnumber_of_epochs: 3")   # train longer: a resume
    >>> check_rerun(out, hp, f"output_folder: {out}\\nlr: 0.2\\nd: 8")
    Traceback (most recent call last):
    ...
    speechbrain_cald.options_record.OptionsDiffer: .../out holds a run trained with other options (.../out/hyperparams.yaml): `d` 4 there, 8 now; `lr` 0.1 there, 0.2 now (and what follows from them: `size`). Nothing was written. Pass another --output_folder, or --overwrite to train afresh in this folder (its checkpoints and model.ckpt are deleted when training starts)
    """
    record = os.path.join(folder, RECORD_NAME)
    if not os.path.isfile(record):
        return
    with open(record, encoding="utf-8") as f:
        recorded_text = f.read()
    recorded = _load(recorded_text)
    given = YAML(typ="rt").load(overrides) if overrides else None
    pinned: Dict[str, Any] = dict(given or {})
    raw = YAML(typ="rt").load(recorded_text) or {}
    for key in RESUMABLE:  # what a resume may change is compared at its recorded value
        if key in raw:
            pinned[key] = raw[key]
    now = _load(_resolved(hparams_file, pinned))
    differ = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
    if not differ:
        return
    with open(hparams_file, encoding="utf-8") as f:
        written = YAML(typ="rt").load(f) or {}
    # an option is a key the YAML gives a value (or a !PLACEHOLDER); the rest (!ref, !new:...) follows from them
    options = [k for k in differ if _tag(written.get(k)) in (None, "!PLACEHOLDER")]
    follow = [k for k in differ if k not in options]
    named = [f"`{k}` {_shown(recorded.get(k, '(absent)'))} there, {_shown(now.get(k, '(absent)'))} now" for k in options]
    if not named:  # only structures differ (an edited YAML): name them
        named, follow = [f"`{k}`" for k in follow], []
    also = f" (and what follows from them: {', '.join(f'`{k}`' for k in follow)})" if follow else ""
    raise OptionsDiffer(
        f"{folder} holds a run trained with other options ({record}): {'; '.join(named)}{also}. Nothing was "
        "written. Pass another --output_folder, or --overwrite to train afresh in this folder (its checkpoints "
        "and model.ckpt are deleted when training starts)"
    )


def write_record(folder: str, hparams_file: str, overrides: Any) -> None:
    """Write ``<folder>/hyperparams.yaml`` as SpeechBrain does (resolved YAML under a header), atomically."""
    os.makedirs(folder, exist_ok=True)
    text = _resolved(hparams_file, overrides)
    with atomic_write(os.path.join(folder, RECORD_NAME), "w", encoding="utf-8") as f:
        f.write(f"# Generated {datetime.date.today()} from:\n# {os.path.abspath(hparams_file)}\n# yamllint disable\n")
        f.write(text)


def clear_earlier_run(hparams: Mapping[str, Any]) -> List[str]:
    """``--overwrite``: delete what an earlier run left to resume from, to evaluate or to guide with.

    ``<output_folder>/model.ckpt``, ``<output_folder>/inference/``, the
    checkpoints in ``save_folder`` and the waypoints in ``snapshot_dir`` (each
    when it lies inside the output folder: a longer earlier run's later
    snapshots would otherwise guide the next students).

    Returns
    -------
    list of str
        What was deleted.
    """
    out = os.path.abspath(hparams["output_folder"])
    targets = [os.path.join(out, "model.ckpt"), os.path.join(out, "inference")]
    for key in ("save_folder", "snapshot_dir"):
        folder: Optional[str] = hparams.get(key)
        if isinstance(folder, str) and os.path.abspath(folder).startswith(out + os.sep) and os.path.isdir(folder):
            targets += [os.path.join(folder, name) for name in sorted(os.listdir(folder))]
    removed = []
    for path in targets:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
        else:
            continue
        removed.append(path)
        logger.info("--overwrite: removed %s (the earlier run's)", path)
    return removed

